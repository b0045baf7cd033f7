"""A pool at run time: its servers, its balancer, and the choice of a server for a connection.

Eligibility is decided here, once, for every algorithm: a server must be available (up, not
draining, not passively ejected, under its connection limit) and not already tried for this
connection. Backup servers are candidates only when no primary is, as with HAProxy's
`backup` and nginx's `backup` flags. The algorithm then chooses among the candidates.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import cast

from l4lb import balance
from l4lb.config.resolve import Resolved, lookup
from l4lb.config.schema import PoolConfig
from l4lb.server import Server

__all__ = ["Pool", "build_pools", "resolve_addresses"]

# (host, port) -> (family, sockaddr), or the reason it did not resolve


class Pool:
    __slots__ = ("backups", "balancer", "config", "name", "primaries", "servers")

    def __init__(self, config: PoolConfig, servers: list[Server]) -> None:
        self.config = config
        self.name = config.name
        self.servers = servers
        self.primaries = [s for s in servers if not s.backup]
        self.backups = [s for s in servers if s.backup]
        self.balancer = balance.get(config.balance)(servers)

    def pick(
        self, now: float, key: bytes | None = None, tried: Collection[Server] = ()
    ) -> Server | None:
        """Choose a server for a new connection, or None if no server can take it."""
        if self.config.slow_start:
            for s in self.servers:
                s.refresh_weight(now)
        candidates = [s for s in self.primaries if s.available(now) and s not in tried]
        if not candidates:
            candidates = [s for s in self.backups if s.available(now) and s not in tried]
            if not candidates:
                return None
        # (balancers take any `ServerLike`, so that tests can give them plain records)
        return cast("Server | None", self.balancer.pick(candidates, key))


def build_pools(
    configs: Iterable[PoolConfig],
    previous: dict[tuple[str, str], Server],
    now: float,
    resolved: Resolved | None = None,
) -> dict[str, Pool]:
    """Build pools for a (re)loaded config, reusing `Server` objects that keep pool and name,
    so that health, counters and active connections carry over a reload. `resolved` is what
    `resolve_addresses` found (in a thread, at reload); an address missing from it is
    resolved here, blocking."""
    pools: dict[str, Pool] = {}
    for pc in configs:
        servers = []
        for sc in pc.servers:
            server = previous.get((pc.name, sc.name)) or Server(pc.name, sc, now)
            server.apply(sc, pc.health, pc.passive, pc.slow_start)
            found = resolved.get(server.address) if resolved is not None else None
            _set_address(server, found if found is not None else lookup(*server.address))
            servers.append(server)
        pools[pc.name] = Pool(pc, servers)
    return pools


def resolve_addresses(configs: Iterable[PoolConfig], known: Resolved | None = None) -> Resolved:
    """Resolve every server address of `configs` not in `known` (what loading the config
    found already). Blocks (getaddrinfo, DNS for names): the runtime calls it in a worker
    thread at reload, so the event loop goes on serving."""
    out: Resolved = dict(known or {})
    for pc in configs:
        for sc in pc.servers:
            key = (sc.address.host, sc.address.port)
            if key not in out:
                out[key] = lookup(*key)
    return out


def _set_address(server: Server, found: tuple[int, tuple] | str) -> None:
    """A name that does not resolve leaves the server out of rotation with the reason in
    `last_check`."""
    if isinstance(found, str):
        server.family, server.sockaddr = 0, ()
        server.last_check = found
    else:
        server.family, server.sockaddr = found
