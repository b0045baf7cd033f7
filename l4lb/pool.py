"""A pool at run time: its servers, its balancer, and the choice of a server for a connection.

Eligibility is decided here, once, for every algorithm: a server must be available (up, not
draining, not passively ejected, under its connection limit) and not already tried for this
connection. Backup servers are candidates only when no primary is, as with HAProxy's
`backup` and nginx's `backup` flags. The algorithm then chooses among the candidates.
"""

from __future__ import annotations

import socket
from collections.abc import Collection, Iterable

from l4lb import balance
from l4lb.config.schema import PoolConfig
from l4lb.server import Server

__all__ = ["Pool", "build_pools"]


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
        return self.balancer.pick(candidates, key)


def build_pools(
    configs: Iterable[PoolConfig], previous: dict[tuple[str, str], Server], now: float
) -> dict[str, Pool]:
    """Build pools for a (re)loaded config, reusing `Server` objects that keep pool and name,
    so that health, counters and active connections carry over a reload."""
    pools: dict[str, Pool] = {}
    for pc in configs:
        servers = []
        for sc in pc.servers:
            server = previous.get((pc.name, sc.name)) or Server(pc.name, sc, now)
            server.apply(sc, pc.health, pc.passive, pc.slow_start)
            resolve(server)
            servers.append(server)
        pools[pc.name] = Pool(pc, servers)
    return pools


def resolve(server: Server) -> None:
    """Resolve the server's address once, at (re)load, as HAProxy does at startup: a name that
    does not resolve leaves the server out of rotation with the reason in `last_check`."""
    try:
        infos = socket.getaddrinfo(server.host, server.port, type=socket.SOCK_STREAM)
    except OSError as exc:
        server.family, server.sockaddr = 0, ()
        server.last_check = f"cannot resolve {server.host!r}: {exc.strerror or exc}"
        return
    family, _, _, _, sockaddr = infos[0]
    server.family, server.sockaddr = family, sockaddr
