"""The open-files limit (RLIMIT_NOFILE): raised at start, and a warning when it is too low.

A proxied TCP connection holds two descriptors (client and server side). Shells and
container runtimes often start processes with a soft limit of 1,024 under a hard limit far
above it, so a worker left at the soft limit fails to accept (`EMFILE`) at about 500
connections while the machine allows many more. HAProxy raises its limit itself (from
`maxconn`), nginx has `worker_rlimit_nofile`; l4lb raises the soft limit to the hard one at
start (no privilege needed; workers inherit it) and, when even the hard limit is below what
the listeners' `max_connections` need, says so once instead of failing later, connection by
connection. docs/OPERATIONS.md, "Many connections", says what to set.
"""

from __future__ import annotations

import resource

from l4lb.config.schema import Config

__all__ = ["needed", "nofile_warning", "raise_nofile"]

_SPARE = 100  # listening sockets, the loop, logs, the control channel, health checks


def raise_nofile() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; return the soft limit now.
    Never lowers it; an unlimited or unraisable limit is left as it is."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft == resource.RLIM_INFINITY:
            return soft if soft != resource.RLIM_INFINITY else hard
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    except (OSError, ValueError):
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return soft


def needed(config: Config) -> int:
    """Descriptors one worker needs with every listener at its `max_connections` (HTTP
    listeners also hold pooled server connections: a floor, not a bound)."""
    conns = sum(lc.max_connections for lc in config.listeners)
    return 2 * conns + _SPARE


def nofile_warning(config: Config, limit: int) -> str | None:
    """The warning to log when `limit` (descriptors per process) holds under 90% of the
    listeners' `max_connections` (the default 10,000 under a 20,000 limit is not worth one)."""
    want = needed(config)
    most = max((limit - _SPARE) // 2, 0)
    if limit <= 0 or most >= 0.9 * (want - _SPARE) // 2:  # a few short of it: no noise
        return None
    return (
        f"open-files limit is {limit} per process (ulimit -n): each worker can hold about "
        f"{most} connections, not the {(want - _SPARE) // 2} its listeners' max_connections "
        "allow; raise the hard limit (LimitNOFILE= in systemd), add workers, or lower "
        'max_connections (docs/OPERATIONS.md, "Many connections")'
    )
