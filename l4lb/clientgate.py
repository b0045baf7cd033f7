"""Who may open a connection to a listener: IP rules and per-client limits (sans-IO).

The listener asks `admit(host, now)` once it knows the client's address (at accept, or once
the PROXY header has named the real client) and before it reads anything else; the answer
is None or the reason to close at once: "denied" (IP rules), "client_max" (that address
already holds `max_per_client` connections, HAProxy's `sc0_conn_cur`) or "client_rate" (it
opened connections faster than `rate_per_client` per second with `rate_burst` at once,
HAProxy's `sc0_conn_rate`, here a GCRA). An admitted connection is counted until `release`.

With `workers = N` the counts and the rate state are the instance's (`shared`, an
`l4lb.shared.limits.SharedClients` keyed by listener and address): SO_REUSEPORT spreads a
client's connections over the workers by a hash of the 4-tuple, and the limits still hold
for the whole. A reload calls `configure`: the counts of live connections are kept, the
rate state is kept unless the rate changed (with `shared`, kept in any case).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from l4lb.config.schema import AccessConfig
from l4lb.gcra import KeyedGcra
from l4lb.iprules import IpRules

if TYPE_CHECKING:
    from l4lb.shared.limits import SharedClients

__all__ = ["ClientGate"]

_MAX_KEYS = 100_000  # client addresses whose connection rate is remembered


class ClientGate:
    __slots__ = ("access", "current", "listener", "rate", "rules", "shared")

    def __init__(
        self, access: AccessConfig, shared: SharedClients | None = None, listener: str = ""
    ) -> None:
        """`shared` (workers > 1) holds the counts for every worker, under `listener`'s name."""
        self.current: dict[str, int] = {}
        self.shared = shared
        self.listener = listener
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
        if self.shared is not None:
            return self.shared.admit((self.listener, host), limit, self.rate, now)
        held = self.current.get(host, 0)
        if limit and held >= limit:
            return "client_max"
        if self.rate is not None and not self.rate.check(host, now).allowed:
            return "client_rate"
        self.current[host] = held + 1
        return None

    def release(self, host: str) -> None:
        """An admitted connection from `host` ended."""
        if self.shared is not None:
            self.shared.release((self.listener, host))
            return
        held = self.current.get(host, 0)
        if held <= 1:
            self.current.pop(host, None)
        else:
            self.current[host] = held - 1
