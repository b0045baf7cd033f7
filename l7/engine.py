"""What one `http`/`https` listener needs to serve a request, built at each (re)load.

A connection reads `listener.engine` for every new request, so a reload applies to the next
request even on a keep-alive connection that stays open, and nothing is closed to make it
happen. Upstream connection pools live in the runtime and are handed from one engine to the
next for the servers that stay, so a reload does not cost the keep-alive connections either.
"""

from __future__ import annotations

import asyncio
import ipaddress
from functools import partial
from typing import TYPE_CHECKING, Any

from l4lb.config.schema import ListenerConfig
from l4lb.gcra import Limiters
from l7.breaker import CircuitBreaker
from l7.budget import RetryBudget
from l7.cache.store import MemoryStore
from l7.forwarded import security_headers
from l7.guard import RouteGuard
from l7.jwtstage import jwt_stages
from l7.router import Router
from l7.upstream import UpstreamPool

if TYPE_CHECKING:
    from l4lb.accesslog import AccessLog
    from l4lb.pool import Pool
    from l4lb.server import Server
    from l4lb.stats import Stats
    from l4lb.tls.build import UpstreamTls

__all__ = ["HttpEngine", "ServerLink", "UpstreamRegistry"]


class ServerLink:
    """What a request to one server needs from the registry (its keep-alive pool and its
    breaker), looked up once per engine instead of once per request."""

    __slots__ = ("breaker", "upstream")

    def __init__(self, upstream: UpstreamPool, breaker: CircuitBreaker | None) -> None:
        self.upstream = upstream
        self.breaker = breaker


class UpstreamRegistry:
    """Upstream pools, breakers and retry budgets that outlive an engine (owned by the
    runtime): keyed by pool and server name plus address, so a changed address starts fresh."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pools: dict[tuple[str, str, str, int], UpstreamPool] = {}
        self.breakers: dict[tuple[str, str], CircuitBreaker] = {}
        self.budgets: dict[str, RetryBudget] = {}
        self.limiters = Limiters()  # routes' rate limits (l7.guard); the runtime may share them
        self.caches: dict[str, MemoryStore] = {}  # [cache.NAME] stores, kept over reloads
        self.jwks: dict[str, Any] = {}  # JWKS URL key caches (l7.jwtfetch), kept over reloads

    def cache(self, config: Any) -> MemoryStore:
        """The memory store of `[cache.NAME]`, with the bounds of the config just loaded."""
        store = self.caches.get(config.name)
        if store is None:
            store = self.caches[config.name] = MemoryStore(config.max_bytes, config.max_object)
        store.max_bytes, store.max_object = config.max_bytes, config.max_object
        store.tag_header = config.tag_header.encode("latin-1")  # l7/cache/store.py: purges
        store.attach_disk(config.disk_path, config.disk_max_bytes)  # l7/cache/disk.py
        return store

    def upstream(self, pool: Pool, server: Server, tls: UpstreamTls | None) -> UpstreamPool:
        key = (pool.name, server.name, server.host, server.port)
        up = self.pools.get(key)
        settings = pool.config.http
        if up is None:
            up = self.pools[key] = UpstreamPool(
                self.loop,
                server.host,
                server.port,
                max_idle=settings.max_idle,
                idle_timeout=settings.idle_timeout,
                connect_timeout=pool.config.connect_timeout,
            )
        else:
            up.max_idle, up.idle_timeout = settings.max_idle, settings.idle_timeout
            up.connect_timeout = pool.config.connect_timeout
        up.server = server
        ceiling = max(settings.max_idle, settings.max_idle_ceiling)
        if server.max_connections:
            ceiling = min(ceiling, max(server.max_connections, settings.max_idle))
        up.max_idle_ceiling = ceiling
        if tls is not None:
            up.tls, up.sni = tls.connect_args(server.name, server.host)
            up.describe = partial(tls.failure, server=server.name, host=server.host)
        else:
            up.tls, up.sni, up.describe = None, None, None
        return up

    def breaker(self, pool: Pool, server: Server) -> CircuitBreaker | None:
        s = pool.config.http
        if not s.breaker_failures:
            return None
        key = (pool.name, server.name)
        b = self.breakers.get(key)
        if b is None:
            b = self.breakers[key] = CircuitBreaker(
                s.breaker_failures, s.breaker_cool_off, s.breaker_half_open
            )
        return b

    def budget(self, pool: Pool) -> RetryBudget:
        b = self.budgets.get(pool.name)
        if b is None:
            b = self.budgets[pool.name] = RetryBudget(pool.config.http.retry_budget)
        b.percent = pool.config.http.retry_budget
        return b

    def close(self) -> None:
        """Shutdown: cancel the connects under way and close every idle connection."""
        for up in self.pools.values():
            up.cancel_connects()
            up.close()
        for source in list(self.jwks.values()):
            source.close()

    def retain(self, live: set[tuple[str, str, str, int]]) -> None:
        """Close the idle connections of servers no longer in any pool."""
        for key in [k for k in self.pools if k not in live]:
            self.pools.pop(key).close()


class HttpEngine:
    """Router, pools and settings of one http(s) listener, plus the shared registries."""

    def __init__(
        self,
        config: ListenerConfig,
        pools: dict[str, Pool],
        registry: UpstreamRegistry,
        upstream_tls: dict[str, UpstreamTls],
        access_log: AccessLog,
        stats: Stats | None,
    ) -> None:
        self.config = config
        self.settings = config.http
        self.scheme = "https" if config.protocol == "https" else "http"
        self.router = Router(config.routes)
        self.pools = pools
        self.registry = registry
        self.upstream_tls = upstream_tls
        self.access_log = access_log
        self.stats = stats
        self.trusted = tuple(ipaddress.ip_network(c) for c in self.settings.trusted_proxies)
        self.upgrades = frozenset(self.settings.upgrades)  # protocols allowed to upgrade
        hsts = self.settings.hsts if self.scheme == "https" else 0
        self.extra_response_headers = security_headers(hsts_max_age=hsts or None)
        if self.settings.http3 and self.settings.alt_svc_max_age and config.bind:
            # RFC 7838: HTTP/3 on the same port over UDP (quic/); clients switch by themselves.
            port, age = config.bind[0].port, self.settings.alt_svc_max_age
            self.extra_response_headers.append((b"alt-svc", f'h3=":{port}"; ma={age}'.encode()))
        self.redirect_https = self.settings.redirect_https
        self.compress = config.compress  # l7.compress.CompressConfig or None
        self.caches = {c.name: (registry.cache(c), c) for c in config.caches}
        self.draining = False
        self.listener: Any = None  # the l4lb Listener serving this engine (for counters)
        self._links: dict[int, tuple[Server, ServerLink]] = {}
        self._budgets: dict[str, RetryBudget] = {}
        # Routes with access rules or rate limits, by name (l7.guard, called by the Exchange).
        self.guards = {
            r.name: RouteGuard(config.name, r.name, r.security, registry.limiters, config.redis)
            for r in config.routes
            if r.security is not None
        }
        # Routes with JWT validation, by name (l7.jwtstage, called by the Exchange first).
        self.jwts = jwt_stages(config.routes, registry)
        self.wafs = _wafs(config)  # route name ("" for no route) -> l7.waf.stage.RouteWaf

    def link(self, pool: Pool, server: Server) -> ServerLink:
        """The upstream pool and breaker of `server` in `pool`, cached for this engine (a
        reload builds a new engine, which takes the registry's then-current settings)."""
        entry = self._links.get(id(server))
        if entry is not None and entry[0] is server:
            return entry[1]
        link = ServerLink(
            self.registry.upstream(pool, server, self.upstream_tls.get(pool.name)),
            self.registry.breaker(pool, server),
        )
        self._links[id(server)] = (server, link)
        return link

    def budget(self, pool: Pool) -> RetryBudget:
        """The retry budget of `pool`, cached for this engine."""
        budget = self._budgets.get(pool.name)
        if budget is None:
            budget = self._budgets[pool.name] = self.registry.budget(pool)
        return budget


def _wafs(config: ListenerConfig) -> dict[str, Any]:
    """The WAF of each route (its own `waf`, else the listener's) and of requests no route
    matched (key ""), for the ones that have one on."""
    default = config.waf
    chosen = {r.name: r.waf if r.waf is not None else default for r in config.routes}
    chosen[""] = default
    if not any(w is not None and w.enabled for w in chosen.values()):
        return {}
    from l7.waf.stage import RouteWaf

    return {
        name: RouteWaf(name or "-", w) for name, w in chosen.items() if w is not None and w.enabled
    }
