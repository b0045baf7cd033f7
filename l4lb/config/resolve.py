"""Resolve server host names when a config is loaded, so a name that does not resolve is a
config error (`l4lb check`, start, reload) instead of a server that is silently down.

This is what `haproxy -c` ("could not resolve address") and `nginx -t` ("host not found in
upstream") do. Names are resolved once per load: a reload resolves them again, so a DNS
change takes effect at the next reload; between reloads a server keeps the address it had.
A reload whose names no longer resolve is refused like any other bad config, and the running
config (with its addresses) stays.

Blocking: `getaddrinfo` waits on the system resolver (up to its timeouts when DNS is down).
Call `unresolved_servers` from a worker thread when an event loop is running.

Names under `.invalid` fail at once without asking the resolver, as RFC 6761 section 6.4
asks of name resolution libraries; IP literals are never looked up.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable

from l4lb.config.lines import format_path
from l4lb.config.values import Address
from l4lb.errors import ConfigError

__all__ = ["Resolved", "lookup", "unresolved_servers"]

_ALLOWED = "an IP address, or a host name that resolves when the config is loaded"

#: (host, port) -> (family, sockaddr) to connect to, or why there is none
Resolved = dict[tuple[str, int], "tuple[int, tuple] | str"]


def lookup(host: str, port: int) -> tuple[int, tuple] | str:
    """The first address of `host` (as HAProxy takes at startup), or why there is none, as
    `cannot resolve 'HOST': why`. Blocks on the system resolver for a name."""
    name = host.rstrip(".").lower()
    if name == "invalid" or name.endswith(".invalid"):
        return f"cannot resolve {host!r}: the .invalid domain never resolves (RFC 6761)"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        return f"cannot resolve {host!r}: {getattr(exc, 'strerror', None) or exc}"
    family, _, _, _, sockaddr = infos[0]
    return family, sockaddr


def unresolved_servers(
    addresses: Iterable[tuple[list[str | int], Address]],
    file: str,
    line_of: Callable[[list[str | int]], int],
    found: Resolved,
) -> list[ConfigError]:
    """One located error per server address (key path, address) whose host does not
    resolve; each address is looked up once, and what was found is kept in `found` for the
    pools to connect to (so a load resolves every name once)."""
    errors = []
    for parts, address in addresses:
        key = (address.host, address.port)
        if key not in found:
            found[key] = lookup(*key)
        result = found[key]
        if isinstance(result, str):
            errors.append(ConfigError(file, format_path(parts), line_of(parts), result, _ALLOWED))
    return errors
