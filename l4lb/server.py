"""A server's runtime state: health, passive ejection, slow start, drain and live counters.

Sans-IO: every method that depends on time takes `now` (monotonic seconds). The listener's
IO code updates the counters; the health checker feeds `on_check`; the pool asks
`available(now)`. A `Server` outlives reloads that keep its pool and name, so its counters and
health carry over and connections that started on it keep counting against it.
"""

from __future__ import annotations

import enum
from typing import Any

from l4lb.config.schema import HealthConfig, PassiveConfig, ServerConfig
from l4lb.health.state import Hysteresis, Transition

__all__ = ["Server", "ServerState"]


class ServerState(enum.Enum):
    UP = "up"
    DOWN = "down"
    DRAINING = "draining"
    SLOW_START = "slow_start"
    CIRCUIT_OPEN = "circuit_open"  # HTTP: the breaker keeps requests away for a cool-off


class Server:
    """One backend address in a pool. Counters are plain ints: the hot path only adds."""

    __slots__ = (
        "active",
        "backup",
        "bytes_in",
        "bytes_out",
        "cell",
        "circuit",
        "connect_failures",
        "draining",
        "ejected_until",
        "fail_streak",
        "family",
        "health",
        "host",
        "last_change",
        "last_check",
        "max_connections",
        "name",
        "passive",
        "pool",
        "port",
        "shared",
        "slot",
        "slow_start",
        "sockaddr",
        "total",
        "up_since",
        "weight",
        "weight_now",
    )

    def __init__(self, pool: str, config: ServerConfig, now: float = 0.0) -> None:
        self.pool = pool
        self.name = config.name
        self.host = config.address.host
        self.port = config.address.port
        self.health = Hysteresis()
        self.passive = PassiveConfig()
        self.slow_start = 0.0
        self.up_since = -1e18  # long ago: no ramp at startup
        self.ejected_until = 0.0
        self.fail_streak = 0
        self.last_change = now
        self.last_check = ""
        self.active = 0
        self.total = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.connect_failures = 0
        self.circuit = "closed"  # HTTP circuit breaker: "closed", "open" or "half_open"
        self.family = 0  # set by `resolve`; 0 means the address did not resolve
        self.sockaddr: tuple = ()
        # workers > 1: the instance's table (l4lb.shared.servers.ServerSlots), this server's
        # slot in it and this worker's cell of its active count; `active` stays our own, and
        # `load` becomes the instance's.
        self.shared: Any = None
        self.slot = 0
        self.cell = 0
        self.apply(config)

    def apply(
        self,
        config: ServerConfig,
        health: HealthConfig | None = None,
        passive: PassiveConfig | None = None,
        slow_start: float = 0.0,
    ) -> None:
        """Take a (re)loaded config; runtime state and counters are kept."""
        self.host = config.address.host
        self.port = config.address.port
        self.weight = config.weight
        self.weight_now = float(config.weight)
        self.backup = config.backup
        self.max_connections = config.max_connections
        self.draining = config.drain
        self.slow_start = slow_start
        if passive is not None:
            self.passive = passive
        if health is not None:
            self.health.rise, self.health.fall = health.rise, health.fall
        else:
            self.health.up, self.health.streak = True, 0

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def load(self) -> int:
        """Connections open to the server from the whole instance: what `least_conn`,
        `random_two` and `max_connections` compare. In one process, `active` itself; in a
        worker of several (`shared` set by `l4lb.shared.servers.ServerSlots.bind`), the sum
        of every worker's count. (Compiled, a property read is a native call.)"""
        shared = self.shared
        if shared is None:
            return self.active
        return shared.total(self.slot)

    def state(self, now: float) -> ServerState:
        if self.draining:
            return ServerState.DRAINING
        if not self.health.up or self.ejected_until > now:
            return ServerState.DOWN
        if self.circuit != "closed":
            return ServerState.CIRCUIT_OPEN
        if now - self.up_since < self.slow_start:
            return ServerState.SLOW_START
        return ServerState.UP

    def available(self, now: float) -> bool:
        """Whether a new connection may go to this server now."""
        if self.draining or not self.health.up or not self.family:
            return False
        if self.ejected_until:
            if self.ejected_until > now:
                return False
            self.ejected_until = 0.0
            self._came_up(now)
        return not self.max_connections or self.load < self.max_connections

    def refresh_weight(self, now: float) -> bool:
        """Scale `weight_now` by slow start (HAProxy's `slowstart`); True while ramping."""
        elapsed = now - self.up_since
        if self.slow_start and elapsed < self.slow_start:
            self.weight_now = self.weight * max(elapsed / self.slow_start, 0.01)
            return True
        self.weight_now = float(self.weight)
        return False

    def on_check(self, ok: bool, now: float, detail: str = "") -> Transition:
        """Feed one active probe result."""
        self.last_check = detail or ("ok" if ok else "failed")
        change = self.health.observe(ok)
        if change is Transition.WENT_UP:
            self._came_up(now)
        elif change is Transition.WENT_DOWN:
            self.last_change = now
        return change

    def take_health(self, up: bool, now: float, detail: str) -> None:
        """The state another process's probes found (workers > 1: worker 0 checks)."""
        self.last_check = detail
        if up != self.health.up:
            self.health.up, self.health.streak = up, 0
            if up:
                self._came_up(now)
            else:
                self.last_change = now

    def on_connect_failed(self, now: float) -> bool:
        """Passive detection (nginx max_fails/fail_timeout); True if this ejected the server."""
        self.connect_failures += 1
        self.fail_streak += 1
        limit = self.passive.max_fails
        if limit and self.fail_streak >= limit and self.ejected_until <= now:
            self.fail_streak = 0
            self.ejected_until = now + self.passive.fail_timeout
            self.last_change = now
            return True
        return False

    def on_connected(self) -> None:
        self.fail_streak = 0

    def _came_up(self, now: float) -> None:
        self.up_since = now
        self.last_change = now
