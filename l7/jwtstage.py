"""The JWT stage of the pipeline: a route's bearer-token check, right after routing and before
the route's access rules and rate limits (so a limit can key on a validated claim,
`key = "claim:sub"`, l7/guard.py). Called from one place, `Exchange.start`, with the
protocol-neutral `Request`, so HTTP/1.1, HTTP/2 and HTTP/3 behave the same.

On success the claims go on the exchange (`exchange.claims`), the headers named in
`forward` are removed from the request whatever the client sent and set from the token (a
client cannot pose as another user by sending `X-User` itself), and `Authorization` is
removed when `forward_token = false` (Envoy's `forward: false`). On failure the answer is
made here: 400/401/403 with `WWW-Authenticate: Bearer` (RFC 6750 §3) or 503 while a JWKS URL
has given no keys yet. The decisions are in l7/jwtverify.py, the keys in l7/jwtkeys.py and
l7/jwtfetch.py.
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Any, Final

from l7.errors_page import error_response
from l7.jwtfetch import JwksSource
from l7.jwtverify import Failure, challenge, check_claims, find_token, forwarded_fields, verify

if TYPE_CHECKING:
    from collections.abc import Iterable

    from l7.jwtconf import JwtConfig

__all__ = ["WAITED", "JwtStage", "jwt_stages"]

log: Final = logging.getLogger("l4lb")

#: Verified tokens kept per route (Envoy's `jwt_cache_config`): a client sends the same token
#: for its whole life, and PyJWT's decoding costs several times the rest of a request. Only
#: tokens up to `_CACHED_TOKEN` bytes, so the cache stays under a few MB per route.
CACHE_ENTRIES: Final = 1024
_CACHED_TOKEN: Final = 4096


class JwtStage:
    """The live side of one route's `JwtConfig`; `source` is the JWKS URL's, if any."""

    __slots__ = (
        "accepted",
        "cache",
        "config",
        "forward",
        "lease",
        "refused",
        "route",
        "source",
        "strip",
    )

    def __init__(self, route: str, config: JwtConfig, source: JwksSource | None) -> None:
        self.route = route
        self.config = config
        self.source = source
        self.lease: Any = None  # a JwksLease while it uses `source` (l7.jwtfetch)
        self.forward = tuple((claim, header.encode()) for claim, header in config.forward)
        strip = {header for _, header in self.forward}
        if not config.forward_token:
            strip.add(b"authorization")
        self.strip = frozenset(strip)
        self.accepted = 0
        self.refused = 0
        # token -> (the KeySet that verified it, its claims, the fields to forward, and the
        # times it is valid from and until, leeway applied: a hit checks those two numbers,
        # the other claims checks do not depend on the time). A new key set (a JWKS
        # refresh, a reload) is a miss, so a key taken out stops its tokens.
        self.cache: dict[str, tuple[Any, dict[str, Any], list[tuple[bytes, bytes]], float, float]]
        self.cache = {}

    def check(self, exchange: Any) -> bool:
        """True if the request may go on (its claims set); else it has been answered, or it
        waits for a JWKS fetch (an unknown `kid`, or no keys yet), after which
        `exchange.start()` runs again (once: a second miss is answered)."""
        request, config = exchange.request, self.config
        token = find_token(request.headers, config.cookie)
        if isinstance(token, Failure):
            return self.refuse(exchange, token)
        source = self.source
        keys = config.keys if source is None else source.keys
        now = time.time()  # exp and nbf are wall-clock
        cached = self.cache.get(token)
        if cached is not None and cached[0] is keys:
            _, claims, fields, since, until = cached
            if now < since or now >= until:  # the time claims, again (nothing else changes)
                del self.cache[token]
                failure = check_claims(claims, config, now)
                if failure is not None:
                    return self.refuse(exchange, failure)
        else:
            result = verify(token, config, keys, now)
            if isinstance(result, Failure):
                if (
                    source is not None
                    and (result.unknown_kid or keys is None)
                    and exchange.claims is not WAITED
                    and source.wait(_resume(exchange))
                ):
                    exchange.claims = WAITED
                    return False  # (its body, if any, is held as during a connect)
                return self.refuse(exchange, result)
            claims, fields = result, forwarded_fields(result, self.forward)
            if len(token) <= _CACHED_TOKEN:
                cache = self.cache
                if len(cache) >= CACHE_ENTRIES:
                    del cache[next(iter(cache))]  # the oldest
                cache[token] = (keys, claims, fields, *_window(claims, config.leeway))
        self.accepted += 1
        exchange.claims = claims
        strip = self.strip
        if strip:
            headers = [pair for pair in request.headers if pair[0] not in strip]
            headers.extend(fields)
            request.headers = headers
        return True

    def refuse(self, exchange: Any, failure: Failure) -> bool:
        self.refused += 1
        host = exchange.request.client[0]
        log.info(
            "route %s: %s jwt refused (%d): %s",
            self.route,
            host,
            failure.status,
            failure.description,
        )
        extra = []
        retry = None
        if failure.status == 503:
            retry = max(1, math.ceil(self.config.jwks_min_refetch))
        else:
            extra.append((b"www-authenticate", challenge(self.config.realm, failure)))
        response, body = error_response(
            failure.status,
            exchange.request_id,
            failure.description,
            retry_after=retry,
            extra_headers=extra,
        )
        headers = response.fields()
        headers.extend(exchange.engine.extra_response_headers)
        exchange.simple(failure.status, headers, body)
        return False

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "route": self.route,
            "accepted": self.accepted,
            "refused": self.refused,
        }
        if self.source is not None:
            out["jwks"] = self.source.report()
        return out


def _window(claims: dict[str, Any], leeway: float) -> tuple[float, float]:
    """When verified `claims` are valid: from `nbf - leeway`, until `exp + leeway` (both
    checked numbers by then, `check_claims`)."""
    nbf, exp = claims.get("nbf"), claims.get("exp")
    since = -math.inf if nbf is None else nbf - leeway
    return since, (math.inf if exp is None else exp + leeway)


#: The claims of an exchange that has waited for a JWKS fetch once (it will not again).
WAITED: Final[dict[str, Any]] = {}


def _resume(exchange: Any) -> Any:
    def resume() -> None:
        if not exchange.finished:
            exchange.start()

    return resume


def jwt_stages(routes: Iterable[Any], registry: Any) -> dict[str, JwtStage]:
    """The stages of the routes with `jwt`, by route name. JWKS URL sources come from (and
    stay in) `registry.jwks`, so a reload keeps their cached keys."""
    out: dict[str, JwtStage] = {}
    sources: dict[str, JwksSource] = registry.jwks
    for route in routes:
        config = route.jwt
        if config is None:
            continue
        source = None
        if config.jwks_url:
            source = sources.get(config.jwks_url)
            if source is None or source.closed:
                source = sources[config.jwks_url] = JwksSource(
                    registry.loop, config.jwks_url, on_closed=_forget(sources)
                )
            source.configure(config)
        stage = out[route.name] = JwtStage(route.name, config, source)
        if source is not None:
            stage.lease = source.lease()  # (the source stays open while the stage lives)
            source.start()
    return out


def _forget(sources: dict[str, JwksSource]) -> Any:
    def forget(source: JwksSource) -> None:
        if sources.get(source.url) is source:
            del sources[source.url]

    return forget
