"""Route security stage: a route's IP rules (403) and rate limits (429), after routing.

DESIGN.md puts "limits and IP rules, then rate limit" before routing; rules that belong to a
route can only run once the route is known, so `Exchange.start` calls `RouteGuard.check`
right after the match and before the route's action (nginx's `allow`/`limit_req` inside a
`location` work the same way). The listener-wide IP rules run earlier still, at accept
(`l4lb.clientgate`). Every HTTP version comes here with the same `Request`, and the answers
go out through `Exchange.simple`, so HTTP/1.1 and HTTP/2 clients see the same thing.

Which address: `Request.client`, the connection's peer, or the client a PROXY header named
(`accept_proxy`). X-Forwarded-For is not consulted: anyone can write it.

Rate limits are GCRA (`l4lb.gcra`), keyed by the client address or by a request header
(an API key); a request without that header is not counted by that limit (as nginx skips an
empty `limit_req_zone` key: pair it with a `client` limit). Several limits on one route
must all allow a request; one that refuses stops the check, and the earlier ones keep the
count (a refused request costs the budgets it got through, as nginx's). The 429 carries
`Retry-After` and the IETF `RateLimit-Policy` / `RateLimit` fields
(draft-ietf-httpapi-ratelimit-headers: `"name";q=RATE;w=SECONDS` and `"name";r=LEFT;t=SECS`).
The limiter state is the instance's (with `workers > 1` every worker spends one budget,
`l4lb.shared.limits`) and is kept across reloads while the limit stays the same (it lives
in the runtime's `UpstreamRegistry`). A `scope = "global"` limit is kept in Redis instead,
shared by every instance (l7.globallimit): its decision comes back later, so `check` says
False (answered, or to be answered) and the limit resumes the request with `resume`, which
runs the limits after it and then `Exchange.start` again; the guard lets that second pass
by (`passing`), so the route's checks count a request once.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from l4lb.config.schema import AccessConfig
from l4lb.config.values import BadValue, choice, duration, integer, string
from l4lb.gcra import KeyedGcra, Limiters
from l4lb.iprules import IpRules
from l7.refusal import refuse

if TYPE_CHECKING:
    from l4lb.config.tables import Path_
    from l4lb.config.tables import TableLoader as _Loader
    from l7.exchange import Exchange

__all__ = ["RateLimit", "RouteGuard", "RouteSecurity", "parse_security"]

log: Final = logging.getLogger("l4lb")


@dataclass(frozen=True, slots=True)
class RateLimit:
    """`rate` requests per `per` seconds, `burst` at once, per `key` ("client" or a
    lower-case header name after "header:")."""

    name: str
    rate: int
    per: float = 1.0
    burst: int = 0
    key: str = "client"
    max_keys: int = 100_000
    scope: str = "local"  # "local" (this process) | "global" (shared in Redis: [redis])


@dataclass(frozen=True, slots=True)
class RouteSecurity:
    """What a route checks before its action: `access` (allow/deny) and `rate_limits`."""

    access: AccessConfig = AccessConfig()  # noqa: RUF009 (frozen: one shared instance is fine)
    rate_limits: tuple[RateLimit, ...] = ()


def _key(value: Any) -> str:
    text = string(value)
    allowed = '"client", "header:NAME" (e.g. "header:x-api-key") or "claim:NAME" (a JWT claim)'
    if text == "client":
        return text
    kind, _, name = text.partition(":")
    if kind == "claim" and name:  # a claim the route's JWT stage validated (l7.jwtstage)
        return text
    if kind != "header" or not name or not all(c.isalnum() or c in "-_" for c in name):
        raise BadValue(f"{text!r} is not a rate-limit key", allowed)
    return "header:" + name.lower()


_LIMIT: Final[dict[str, Any]] = {
    "name": (string, ""),
    "rate": (integer(1, 1_000_000_000), None),
    "per": (duration, 1.0),
    "burst": (integer(0, 1_000_000_000), 0),
    "key": (_key, "client"),
    "max_keys": (integer(1, 10_000_000), 100_000),
    "scope": (choice("local", "global"), "local"),
}


def parse_security(loader: _Loader, item: dict[str, Any], here: Path_) -> RouteSecurity | None:
    """A route's `access` and `rate_limits` (None when it has neither or they are wrong:
    the caller compares the error count)."""
    access = AccessConfig()
    if item.get("access") is not None:
        from l4lb.config.access import parse_access

        got = parse_access(loader, item["access"], [*here, "access"], listener=False)
        if got is None:
            return None
        access = got
    limits = []
    raw_limits = item.get("rate_limits", [])
    if not isinstance(raw_limits, list):
        loader.error(
            [*here, "rate_limits"],
            "expected a list of tables",
            'rate_limits = [{rate = 10, per = "1s", burst = 20, key = "client"}]',
        )
        return None
    for i, raw in enumerate(raw_limits):
        parts = [*here, "rate_limits", i]
        table = loader.table(raw, parts, _LIMIT)
        if table is None:
            return None
        if table["rate"] is None:
            loader.error([*parts, "rate"], "missing required key 'rate'", "requests per `per`")
            return None
        table["name"] = table["name"] or f"limit[{i}]"
        limits.append(RateLimit(**table))
    if not access and not limits:
        return None
    return RouteSecurity(access, tuple(limits))


class _Limit:
    __slots__ = ("claim", "config", "gcra", "glob", "header", "policy")

    def __init__(self, config: RateLimit, gcra: KeyedGcra | None, glob: Any = None) -> None:
        self.config = config
        self.gcra = gcra
        self.glob = glob  # l7.globallimit.GlobalLimit when scope = "global"
        self.header = config.key[7:].encode() if config.key.startswith("header:") else None
        self.claim = config.key[6:] if config.key.startswith("claim:") else None
        window = config.per
        shown = int(window) if window == int(window) else window
        self.policy = f'"{config.name}";q={config.rate};w={shown}'.encode()


class RouteGuard:
    """The live side of one route's `RouteSecurity`. `limiters` is where GCRA state outlives
    a reload (the registry's dict, keyed by listener, route and limit); `redis` is the
    `[redis]` config the route's global limits use (l7.redisconf)."""

    __slots__ = ("denied", "limits", "passing", "route", "rules")

    def __init__(
        self,
        listener: str,
        route: str,
        security: RouteSecurity,
        limiters: Limiters,
        redis: Any = None,
    ) -> None:
        self.route = route
        rules = IpRules(security.access.allow, security.access.deny)
        self.rules = rules if rules else None  # (None: no per-request __bool__ call)
        self.denied = 0
        self.passing: Any = None  # the exchange a global limit resumed (see `resume`)
        self.limits = []
        for limit in security.rate_limits:
            if limit.scope == "global":
                from l7.globallimit import global_limit

                glob = global_limit(listener, route, limit, redis, limiters)
                self.limits.append(_Limit(limit, None, glob))
                continue
            # The local-state backend: this process's, or the instance's (workers > 1).
            key = (listener, route, limit)
            gcra = limiters.make(key, limit.rate, limit.per, limit.burst, limit.max_keys)
            self.limits.append(_Limit(limit, gcra))

    def check(self, exchange: Exchange, now: float) -> bool:
        """True if the request may go on; else it has been answered (403 or 429), or a
        global limit will answer it or `resume` it."""
        if self.passing is exchange:
            return True  # resumed by a global limit: checked already
        host = exchange.request.client[0]
        if self.rules is not None and not self.rules.allowed(host):
            self.denied += 1
            log.info("route %s: %s denied (403)", self.route, host)
            refuse(exchange, 403, "forbidden by the route's access rules", [])
            return False
        return self.limits_from(exchange, 0, now)

    def limits_from(self, exchange: Exchange, first: int, now: float) -> bool:
        """Run the limits from index `first` on (as `check`)."""
        request = exchange.request
        host = request.client[0]
        limits = self.limits
        for i in range(first, len(limits)):
            limit = limits[i]
            key: Any
            if limit.claim is not None:  # a validated JWT claim (l7.jwtstage)
                claims = exchange.claims
                key = claims.get(limit.claim) if claims is not None else None
                if key is None or isinstance(key, dict | list):
                    continue
            elif limit.header is None:
                key = host
            else:
                key = request.header(limit.header)
                if key is None:
                    continue
            if limit.glob is not None:
                return limit.glob.check(self, exchange, key, i)
            retry = limit.gcra.take(key, now)  # type: ignore[union-attr]
            if retry:
                self.refuse(exchange, limit, retry)
                return False
        return True

    def resume(self, exchange: Exchange, first: int) -> None:
        """A global limit at index `first - 1` allowed the request (or failed open): the
        limits after it, then the request goes on from the start of the pipeline."""
        if exchange.finished:
            return  # the client went away meanwhile
        if self.limits_from(exchange, first, exchange.engine.registry.loop.time()):
            self.passing = exchange
            try:
                exchange.start()
            finally:
                self.passing = None

    def refuse(self, exchange: Exchange, limit: _Limit, retry_after: float) -> None:
        """429 with Retry-After and the RateLimit fields."""
        retry = max(1, math.ceil(retry_after))
        extra = [
            (b"ratelimit-policy", limit.policy),
            (b"ratelimit", f'"{limit.config.name}";r=0;t={retry}'.encode()),
        ]
        log.info(
            "route %s: %s over rate limit %s (429)",
            self.route,
            exchange.request.client[0],
            limit.config.name,
        )
        refuse(exchange, 429, f"rate limit {limit.config.name}", extra, retry)

    def report(self) -> dict[str, Any]:
        """Counters for `/status` (per worker)."""
        return {
            "route": self.route,
            "denied": self.denied,
            "limits": [
                lim.glob.report()
                if lim.glob is not None
                else {
                    "name": lim.config.name,
                    "scope": "local",
                    "requests": lim.gcra.checked,  # type: ignore[union-attr]
                    "rejected": lim.gcra.rejected,  # type: ignore[union-attr]
                    "keys": len(lim.gcra),  # type: ignore[arg-type]
                }
                for lim in self.limits
            ],
        }
