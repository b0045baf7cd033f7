"""Whether an instance is ready to take traffic: the answer behind `GET /ready` and `l4lb ready`.

Ready means a client sent here now would be served: the config is loaded, every listener in it
is bound and accepting, and every pool a listener sends to has at least one server up (or in
slow start). A draining server does not count, so draining every server of a pool makes the
instance not ready: that is how a planned switchover moves a virtual IP (docs/HA.md). During a
shutdown the listeners stop accepting first, so the instance reports not ready before it closes.

This is what keepalived's `vrrp_script` (track script) asks, like HAProxy's `monitor fail if
nbsrv(pool) lt 1` and Envoy's `/ready`; a reload in progress does not make an instance
unready, because the old config keeps serving until the new one is swapped in.

Sans-IO: it reads the config and a stats snapshot (`Stats.snapshot`, or the supervisor's merged
one, which have the same shape) and reads no clock and no socket.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["Readiness", "readiness"]

_SERVING = ("up", "slow_start")


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    reasons: tuple[str, ...] = ()  # why not, one sentence each; empty when ready

    def json(self) -> dict[str, Any]:
        return {"ready": self.ready, "reasons": list(self.reasons)}


def readiness(config: Any, snapshot: dict[str, Any]) -> Readiness:
    """Ready, or not with every reason (a track script's log should say all that is wrong)."""
    if config is None:
        return Readiness(False, ("no config is loaded",))
    reasons: list[str] = []
    listeners = {entry.get("name"): entry for entry in snapshot.get("listeners", ())}
    used: dict[str, None] = {}
    for lc in config.listeners:
        entry = listeners.get(lc.name)
        if entry is None:
            reasons.append(f"listener {lc.name} is not bound yet")
        elif not entry.get("accepting", True):
            reasons.append(f"listener {lc.name} is not accepting connections (stopping)")
        used.update(dict.fromkeys(_pools_of(lc)))
    pools = {entry.get("name"): entry for entry in snapshot.get("pools", ())}
    for name in used:
        servers = pools.get(name, {}).get("servers", ())
        if not any(s.get("state") in _SERVING for s in servers):
            states = ", ".join(f"{s.get('name')} {s.get('state')}" for s in servers)
            reasons.append(f"pool {name} has no server up ({states or 'no servers'})")
    return Readiness(not reasons, tuple(reasons))


def _pools_of(listener: Any) -> Iterable[str]:
    """The pools a listener can send a connection to: its default and its routes' (an SNI
    route names a pool; an HTTP route forwards to `action.pool`, or redirects/responds)."""
    if listener.pool:
        yield listener.pool
    for route in listener.routes:
        name = getattr(route, "pool", None) or getattr(getattr(route, "action", None), "pool", None)
        if name:
            yield name
