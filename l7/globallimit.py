"""One route's `scope = "global"` rate limit: the guard's side of a decision made in Redis.

`check` sends the decision (l7.redislimit) and says False: the request waits, with its
body (if any) buffered as for a server connection being made, and nothing else of the
loop waits. When the outcome comes: allowed, the guard resumes the request
(`RouteGuard.resume`); refused, the same 429 a local limit gives; no outcome (Redis down,
an error, or no answer within `[redis] timeout`), `on_error` decides: "allow" lets the
request on as if the limit were not there, "deny" answers 503 with `Retry-After: 1`.

Why 503 and not 429 when failing closed: the client has not gone over its limit, so the
`RateLimit` fields would be made up and a client that backs off per 429 would be punished
for l4lb's problem; 503 says "this service cannot answer now, retry", which is true, and
balancers and clients retry it as a server-side failure. (Envoy's global rate limit filter
answers 500 by default when it fails closed, `status_on_error` to change it.)
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

from l4lb.gcra import Decision
from l7.redisgcra import script_args
from l7.redislimit import RedisLimiter, redis_key
from l7.refusal import refuse

__all__ = ["GlobalLimit", "global_limit"]


def limiter_for(config: Any, limiters: dict[tuple, Any]) -> RedisLimiter:
    """The process's limiter for `[redis]` `config`, kept in the registry's `limiters`
    across reloads; one made for a changed config retires the others."""
    key = ("redis", config)
    found = limiters.get(key)
    if found is None:
        for old in [k for k, v in limiters.items() if isinstance(v, RedisLimiter)]:
            limiters.pop(old).close()
        found = limiters[key] = RedisLimiter(config)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return found  # (no loop: a test of the config; the first decision connects)
        found.warm_up()
    return found


def global_limit(
    listener: str, route: str, config: Any, redis: Any, limiters: dict[tuple, Any]
) -> GlobalLimit:
    """The live side of a global limit, kept in the registry's `limiters` across reloads
    while the limit is unchanged (its counters go on, as a local limit's do), bound to the
    limiter of the `[redis]` just loaded."""
    key = (listener, route, config)
    found = limiters.get(key)
    if isinstance(found, GlobalLimit):
        found.bind(redis, limiters)
    else:
        found = limiters[key] = GlobalLimit(listener, route, config, redis, limiters)
    return found


class GlobalLimit:
    """The live side of one global limit on one route (per worker process); counters for
    `/status`: requests decided, rejected, Redis errors and timeouts, and requests that
    `on_error` decided."""

    __slots__ = (
        "allow_on_error",
        "args",
        "checked",
        "config",
        "errors",
        "fallback",
        "limiter",
        "listener_route",
        "prefix",
        "rejected",
        "timeouts",
    )

    def __init__(
        self, listener: str, route: str, config: Any, redis: Any, limiters: dict[tuple, Any]
    ) -> None:
        self.config = config
        self.args = script_args(config.rate, config.per, config.burst)
        self.listener_route = f"{listener}:{route}:{config.name}:"
        self.checked = self.rejected = self.errors = self.timeouts = self.fallback = 0
        self.bind(redis, limiters)

    def bind(self, redis: Any, limiters: dict[tuple, Any]) -> None:
        """Use the `[redis]` config `redis` (at load and at each reload)."""
        assert redis is not None  # the config loader requires [redis] for global limits
        self.limiter = limiter_for(redis, limiters)
        self.allow_on_error = redis.on_error == "allow"
        # The same on every instance with the same config: listener, route, limit name.
        self.prefix = redis.key_prefix + self.listener_route

    def check(self, guard: Any, exchange: Any, value: Any, index: int) -> bool:
        """Send the decision for `value` (a str, or a header's bytes): False (it will be
        answered or resumed), or, when Redis is known to be down, what `on_error` says now."""
        self.checked += 1
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        done = partial(self._done, guard, exchange, index)
        if self.limiter.decide(redis_key(self.prefix, value), self.args, done):
            return False
        self.fallback += 1
        if self.allow_on_error:
            return guard.limits_from(exchange, index + 1, exchange.engine.registry.loop.time())
        _unavailable(guard, exchange)
        return False

    def _done(self, guard: Any, exchange: Any, index: int, outcome: Decision | str) -> None:
        if isinstance(outcome, Decision):
            if exchange.finished:
                return
            if outcome.allowed:
                guard.resume(exchange, index + 1)
            else:
                self.rejected += 1
                guard.refuse(exchange, guard.limits[index], outcome.retry_after)
            return
        if outcome == "timeout":
            self.timeouts += 1
        else:
            self.errors += 1
        self.fallback += 1
        if exchange.finished:
            return
        if self.allow_on_error:
            guard.resume(exchange, index + 1)
        else:
            _unavailable(guard, exchange)

    def report(self) -> dict[str, Any]:
        return {
            "name": self.config.name,
            "scope": "global",
            "requests": self.checked,
            "rejected": self.rejected,
            "redis_errors": self.errors,
            "redis_timeouts": self.timeouts,
            "on_error": self.fallback,
            "redis_up": self.limiter.health.up,
            "redis_connected": self.limiter.connected,
        }


def _unavailable(guard: Any, exchange: Any) -> None:
    refuse(exchange, 503, "rate limit store unavailable", [], 1)
