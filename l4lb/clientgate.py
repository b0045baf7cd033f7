"""Who may open a connection to a listener: IP rules and per-client limits (sans-IO).

The listener asks `admit(host, now)` once it knows the client's address (at accept, or once
the PROXY header has named the real client) and before it reads anything else; the answer
is None or the reason to close at once: "denied" (IP rules), "client_max" (that address
already holds `max_per_client` connections, HAProxy's `sc0_conn_cur`) or "client_rate" (it
opened connections faster than `rate_per_client` per second with `rate_burst` at once,
HAProxy's `sc0_conn_rate`, here a GCRA). An admitted connection is counted until `release`.

State is per worker process: with `workers = N` each worker enforces the limits on the
connections the kernel hands it (SO_REUSEPORT spreads them by a hash of the 4-tuple, so a
client's connections land on several workers); sharing counts across workers is a later
step. A reload calls `configure`: the counts of live connections are kept, the rate state
is kept unless the rate changed.
"""

from __future__ import annotations

from l4lb.config.schema import AccessConfig
from l4lb.gcra import KeyedGcra
from l4lb.iprules import IpRules

__all__ = ["ClientGate"]

_MAX_KEYS = 100_000  # client addresses whose connection rate is remembered


class ClientGate:
    __slots__ = ("access", "current", "rate", "rules")

    def __init__(self, access: AccessConfig) -> None:
        self.current: dict[str, int] = {}
        self.rate: KeyedGcra | None = None
        self.access = AccessConfig()
        self.rules = IpRules()
        self.configure(access)

    def configure(self, access: AccessConfig) -> None:
        if (access.allow, access.deny) != (self.access.allow, self.access.deny):
            self.rules = IpRules(access.allow, access.deny)
        if not access.rate_per_client:
            self.rate = None
        elif (
            self.rate is None
            or self.rate.rate != access.rate_per_client
            or self.rate.burst != (access.rate_burst or access.rate_per_client)
        ):
            self.rate = KeyedGcra(
                access.rate_per_client, 1.0, access.rate_burst, max_keys=_MAX_KEYS
            )
        self.access = access

    def admit(self, host: str, now: float) -> str | None:
        """None if a new connection from `host` may go on (it is then counted), else why not."""
        if self.rules and not self.rules.allowed(host):
            return "denied"
        limit = self.access.max_per_client
        held = self.current.get(host, 0)
        if limit and held >= limit:
            return "client_max"
        if self.rate is not None and not self.rate.check(host, now).allowed:
            return "client_rate"
        self.current[host] = held + 1
        return None

    def release(self, host: str) -> None:
        """An admitted connection from `host` ended."""
        held = self.current.get(host, 0)
        if held <= 1:
            self.current.pop(host, None)
        else:
            self.current[host] = held - 1
