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
in the runtime's `UpstreamRegistry`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from l4lb.config.schema import AccessConfig
from l4lb.config.values import BadValue, duration, integer, string
from l4lb.gcra import KeyedGcra, Limiters
from l4lb.iprules import IpRules
from l7.errors_page import error_response

if TYPE_CHECKING:
    from l4lb.config.tables import Path_
    from l4lb.config.tables import TableLoader as _Loader

__all__ = ["RateLimit", "RouteGuard", "RouteSecurity", "parse_security"]

log = logging.getLogger("l4lb")


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


@dataclass(frozen=True, slots=True)
class RouteSecurity:
    """What a route checks before its action: `access` (allow/deny) and `rate_limits`."""

    access: AccessConfig = AccessConfig()  # noqa: RUF009 (frozen: one shared instance is fine)
    rate_limits: tuple[RateLimit, ...] = ()


def _key(value: Any) -> str:
    text = string(value)
    allowed = '"client" or "header:NAME", e.g. "header:x-api-key"'
    if text == "client":
        return text
    kind, _, name = text.partition(":")
    if kind != "header" or not name or not all(c.isalnum() or c in "-_" for c in name):
        raise BadValue(f"{text!r} is not a rate-limit key", allowed)
    return "header:" + name.lower()


_LIMIT: dict[str, Any] = {
    "name": (string, ""),
    "rate": (integer(1, 1_000_000_000), None),
    "per": (duration, 1.0),
    "burst": (integer(0, 1_000_000_000), 0),
    "key": (_key, "client"),
    "max_keys": (integer(1, 10_000_000), 100_000),
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
    __slots__ = ("config", "gcra", "header", "policy")

    def __init__(self, config: RateLimit, gcra: KeyedGcra) -> None:
        self.config = config
        self.gcra = gcra
        self.header = config.key[7:].encode() if config.key.startswith("header:") else None
        window = config.per
        shown = int(window) if window == int(window) else window
        self.policy = f'"{config.name}";q={config.rate};w={shown}'.encode()


class RouteGuard:
    """The live side of one route's `RouteSecurity`. `limiters` is where GCRA state outlives
    a reload (the registry's dict, keyed by listener, route and limit)."""

    __slots__ = ("denied", "limits", "route", "rules")

    def __init__(
        self,
        listener: str,
        route: str,
        security: RouteSecurity,
        limiters: Limiters,
    ) -> None:
        self.route = route
        self.rules = IpRules(security.access.allow, security.access.deny)
        self.denied = 0
        self.limits = []
        for limit in security.rate_limits:
            # The local-state backend: this process's, or the instance's (workers > 1).
            key = (listener, route, limit)
            gcra = limiters.make(key, limit.rate, limit.per, limit.burst, limit.max_keys)
            self.limits.append(_Limit(limit, gcra))

    def check(self, exchange: Any, now: float) -> bool:
        """True if the request may go on; else it has been answered (403 or 429)."""
        request = exchange.request
        host = request.client[0]
        if self.rules and not self.rules.allowed(host):
            self.denied += 1
            log.info("route %s: %s denied (403)", self.route, host)
            _answer(exchange, 403, "forbidden by the route's access rules", [])
            return False
        for limit in self.limits:
            if limit.header is None:
                key: object = host
            else:
                key = request.header(limit.header)
                if key is None:
                    continue
            decision = limit.gcra.check(key, now)
            if not decision.allowed:
                retry = max(1, math.ceil(decision.retry_after))
                extra = [
                    (b"ratelimit-policy", limit.policy),
                    (
                        b"ratelimit",
                        f'"{limit.config.name}";r=0;t={retry}'.encode(),
                    ),
                ]
                log.info(
                    "route %s: %s over rate limit %s (429)", self.route, host, limit.config.name
                )
                _answer(exchange, 429, f"rate limit {limit.config.name}", extra, retry)
                return False
        return True

    def report(self) -> dict[str, Any]:
        """Counters for `/status` (per worker)."""
        return {
            "route": self.route,
            "denied": self.denied,
            "limits": [
                {
                    "name": lim.config.name,
                    "requests": lim.gcra.checked,
                    "rejected": lim.gcra.rejected,
                    "keys": len(lim.gcra),
                }
                for lim in self.limits
            ],
        }


def _answer(
    exchange: Any,
    status: int,
    message: str,
    extra: list[tuple[bytes, bytes]],
    retry_after: int | None = None,
) -> None:
    response, body = error_response(
        status, exchange.request_id, message, retry_after=retry_after, extra_headers=extra
    )
    headers = response.fields()
    headers.extend(exchange.engine.extra_response_headers)
    exchange.simple(status, headers, body)
