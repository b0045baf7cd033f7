"""The stats registry: rates, latency histograms and recent events, read by the TUI, the admin
API (`/status`, `/metrics`) and logs.

Sans-IO, like the rest of the deciding code: nothing here reads a clock or a socket. The
runtime calls `Stats.tick(runtime, now)` once a second with its monotonic loop time, and
`Stats.snapshot(runtime, now)` when someone asks. Counters themselves stay where the hot path
already increments them (plain ints on `Server` and `Listener`); this module only samples
them, so the data path pays nothing for stats it does not read.

The runtime is read duck-typed (`runtime.pools`, `runtime.listeners`, `runtime.config`,
`runtime.reloads`, optional `runtime.retired`), with `getattr` defaults for anything optional,
so the snapshot works on the runtime as it is and on anything shaped like it.

Byte counters: `Server.bytes_in/out` grow when a connection ends. To give a byte rate that
does not jump at the end of long connections, `tick` and `snapshot` add the bytes moved so far
by live relays (`session.relay.bytes_in/out`) to the server's finished total. A listener
without byte counters of its own reports the bytes of the pools it feeds, its default pool and
its routes' pools (`bytes_source: "pool"`); these are exact when no other listener feeds them.
"""

from __future__ import annotations

import bisect
import itertools
import math
import os
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from l4lb import __version__

__all__ = [
    "DEFAULT_BOUNDS",
    "Event",
    "LatencyHistogram",
    "RateMeter",
    "Stats",
]

# HTTP/3 listener counters (l4lb/listener.py), in /status, /metrics and the live view.
H3_COUNTERS = (
    "h3_connections",
    "h3_handshakes",
    "h3_streams",
    "h3_resets",
    "h3_goaways",
    "h3_retries",
    "h3_dropped",
    "h3_stateless_resets",
    "h3_early_accepted",
    "h3_early_refused",
    "h3_packets_lost",
)
#: The counters a listener has only for some protocols (access rules, HTTP/2, HTTP/3): in
#: /status when the listener has them, summed over workers (l4lb/reports.py).
OPTIONAL_LISTENER_COUNTERS = (
    "refused",
    "denied",
    "limited",
    "errors",
    "h2_connections",
    "h2_streams",
    "h2_resets",
    "h2_goaways",
    *H3_COUNTERS,
)

#: Bucket upper bounds in seconds, log-spaced in 1-2.5-5 steps from 25 µs (a loopback
#: connect) to 30 s (a slow connect timeout). Round numbers, so Prometheus `le` labels read
#: well and stay the same from release to release (changing them breaks rate() over buckets).
DEFAULT_BOUNDS: tuple[float, ...] = (
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


class LatencyHistogram:
    """Counts of observations per bucket, Prometheus-style (cumulative on export).

    Fixed buckets cost one `bisect` and one increment per observation and merge across
    workers by addition, which a sample-keeping quantile sketch does not. The price is
    precision: `quantile` interpolates linearly inside a bucket (as PromQL's
    `histogram_quantile` does), clamped to the smallest and largest value actually seen.
    """

    __slots__ = ("_counts", "bounds", "count", "max", "min", "sum")

    def __init__(self, bounds: Iterable[float] = DEFAULT_BOUNDS) -> None:
        self.bounds = tuple(bounds)
        if not self.bounds or any(b <= a for a, b in itertools.pairwise(self.bounds)):
            raise ValueError("bucket bounds must be a non-empty increasing sequence")
        self._counts = [0] * (len(self.bounds) + 1)  # the last bucket is +Inf
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = 0.0

    def observe(self, seconds: float) -> None:
        """Record one duration. Negative or NaN values (a clock bug) count as zero."""
        if not seconds > 0.0:
            seconds = 0.0
        self._counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.count += 1
        self.sum += seconds
        if seconds < self.min:  # (not min()/max(): two calls fewer per connection)
            self.min = seconds
        if seconds > self.max:
            self.max = seconds

    def quantile(self, q: float) -> float | None:
        """Estimated `q`-quantile in seconds (0 <= q <= 1); None before any observation."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be between 0 and 1, not {q}")
        if not self.count:
            return None
        rank = q * self.count
        below = 0
        for i, n in enumerate(self._counts):
            if n and below + n >= rank:
                lower = self.bounds[i - 1] if i else 0.0
                upper = self.bounds[i] if i < len(self.bounds) else self.max
                lower, upper = max(lower, self.min), min(upper, self.max)
                if upper <= lower:
                    return lower
                return lower + (upper - lower) * max(rank - below, 0.0) / n
            below += n
        return self.max  # pragma: no cover - the loop always returns when count > 0

    def buckets(self) -> list[tuple[float, int]]:
        """`(upper bound, cumulative count)` pairs ending with `(inf, count)`, as the
        Prometheus text format wants them."""
        out: list[tuple[float, int]] = []
        running = 0
        for bound, n in zip((*self.bounds, math.inf), self._counts, strict=True):
            running += n
            out.append((bound, running))
        return out


class RateMeter:
    """Per-second rate of a growing counter, sampled about once a second, with the last
    `history` rates kept for a sparkline.

    A counter that goes down (its object was replaced, e.g. a server removed and re-added by a
    reload) is treated as restarted from zero, as Prometheus's `rate()` treats resets.
    """

    __slots__ = ("_history", "_last_now", "_last_value", "rate")

    def __init__(self, history: int = 60) -> None:
        self._history: deque[float] = deque(maxlen=history)
        self._last_now: float | None = None
        self._last_value = 0
        self.rate = 0.0

    def sample(self, now: float, value: int | float) -> float:
        """Feed the counter's value at `now` (monotonic seconds); returns the rate since the
        previous sample. The first sample only sets the baseline."""
        if self._last_now is None:
            self._last_now, self._last_value = now, value
            return self.rate
        elapsed = now - self._last_now
        if elapsed <= 0:
            return self.rate
        delta = value - self._last_value
        if delta < 0:
            delta = value
        self.rate = delta / elapsed
        self._history.append(self.rate)
        self._last_now, self._last_value = now, value
        return self.rate

    def history(self) -> list[float]:
        """The last rates, oldest first."""
        return list(self._history)


@dataclass(frozen=True, slots=True)
class Event:
    """Something an operator wants to see in the view: a server going up or down, a reload."""

    time: float  # monotonic seconds
    kind: str  # server_up, server_down, server_draining, server_slow_start, reload, ...
    text: str


class _Meters:
    __slots__ = ("bytes_in", "bytes_out", "conn", "req")

    def __init__(self, history: int) -> None:
        self.conn = RateMeter(history)
        self.req = RateMeter(history)  # HTTP requests (listeners)
        self.bytes_in = RateMeter(history)
        self.bytes_out = RateMeter(history)


class Stats:
    """One registry per process. `now` is always monotonic seconds (the loop's clock); `wall`
    is the matching `time.time()` at construction, used only to print times of day."""

    def __init__(
        self,
        now: float,
        wall: float,
        *,
        pid: int | None = None,
        version: str = __version__,
        history: int = 60,
        max_events: int = 100,
    ) -> None:
        self.started = now
        self.wall_started = wall
        self.pid = os.getpid() if pid is None else pid
        self.version = version
        self.history = history
        self.loaded_at = now
        self._events: deque[Event] = deque(maxlen=max_events)
        self._listeners: dict[str, _Meters] = {}
        self._servers: dict[tuple[str, str], _Meters] = {}
        self._latency: dict[tuple[str, str], LatencyHistogram] = {}
        self._states: dict[tuple[str, str], str] = {}
        self._changed: dict[tuple[str, str], float] = {}  # when the state shown last changed
        self._config: object = None
        self._reloads_seen: int | None = None

    # -- inputs ------------------------------------------------------------------------------

    def event(self, now: float, kind: str, text: str) -> None:
        """Remember an event; the oldest is dropped past `max_events`."""
        self._events.append(Event(now, kind, text))

    def operator(self, now: float, pool: str, server: Any, action: str, by: str) -> None:
        """An operator drained or enabled `server` (`action` "drain" or "enable") from `by`
        ("the admin API", "the live view"): an event at once, so a drain undone before the
        next tick still shows, and the state noted so the tick does not report it again."""
        key = (pool, server.name)
        before, after = self._states.get(key), _state(server, now)
        self._states[key] = after
        if before != after:
            self._changed[key] = now
        move = f"{before} -> {after}" if before and before != after else after
        self.event(now, action, f"{pool}/{server.name} {move}, from {by}")

    def connect_latency(self, pool: str, server: str) -> LatencyHistogram:
        """The connect-time histogram of one server, made on first use: the runtime calls
        `.observe(seconds)` on it when a connect to that server succeeds."""
        hist = self._latency.get((pool, server))
        if hist is None:
            hist = self._latency[(pool, server)] = LatencyHistogram()
        return hist

    def histograms(self) -> Iterator[tuple[tuple[str, str], LatencyHistogram]]:
        """Every `((pool, server), histogram)` kept, for the Prometheus export."""
        return iter(list(self._latency.items()))

    def events(self) -> list[Event]:
        return list(self._events)

    def tick(self, runtime: Any, now: float) -> None:
        """Sample every counter once (call about once a second), note config changes and
        reloads, and turn server state changes into events.

        State changes are found by comparing with the previous tick (or snapshot), so a flap
        shorter than a tick is missed; the runtime need not report up/down itself.
        """
        self._note_config(runtime, now)
        listeners = getattr(runtime, "listeners", {})
        pools = getattr(runtime, "pools", {})
        live = _live_bytes(runtime)
        for name, listener in listeners.items():
            meters = self._listeners.get(name) or self._listeners.setdefault(
                name, _Meters(self.history)
            )
            meters.conn.sample(now, getattr(listener, "total", 0))
            meters.req.sample(now, getattr(listener, "requests", 0))
            bytes_in, bytes_out, _ = _listener_bytes(listener, pools, live)
            meters.bytes_in.sample(now, bytes_in)
            meters.bytes_out.sample(now, bytes_out)
        seen: set[tuple[str, str]] = set()
        for pool_name, pool in pools.items():
            for server in getattr(pool, "servers", ()):
                key = (pool_name, server.name)
                seen.add(key)
                meters = self._servers.get(key) or self._servers.setdefault(
                    key, _Meters(self.history)
                )
                meters.conn.sample(now, getattr(server, "total", 0))
                extra_in, extra_out = live.get(id(server), (0, 0))
                meters.bytes_in.sample(now, getattr(server, "bytes_in", 0) + extra_in)
                meters.bytes_out.sample(now, getattr(server, "bytes_out", 0) + extra_out)
                self._note_state(key, server, now)
        for gone in [k for k in self._listeners if k not in listeners]:
            del self._listeners[gone]
        for table in (self._servers, self._latency, self._states, self._changed):
            for gone in [k for k in table if k not in seen]:
                del table[gone]

    def _note_config(self, runtime: Any, now: float) -> None:
        config = getattr(runtime, "config", None)
        if config is not self._config:
            if self._config is not None:
                self.loaded_at = now
            self._config = config
        reloads = getattr(runtime, "reloads", 0)
        if self._reloads_seen is not None and reloads > self._reloads_seen:
            file = getattr(config, "file", "")
            self.event(now, "reload", f"reload {reloads} applied from {file}")
            self.loaded_at = now
        self._reloads_seen = reloads

    def _note_state(self, key: tuple[str, str], server: Any, now: float) -> None:
        state = _state(server, now)
        before = self._states.get(key)
        self._states[key] = state
        if before is None or before == state:
            return
        self._changed[key] = now
        text = f"{key[0]}/{key[1]} {before} -> {state}"
        if state == "down":
            if getattr(server, "ejected_until", 0.0) > now:
                text += " (ejected after connect failures)"
            elif getattr(server, "last_check", ""):
                text += f" ({server.last_check})"
        self.event(now, f"server_{state}", text)

    # -- outputs -----------------------------------------------------------------------------

    def wall(self, now: float) -> float:
        """The time of day (Unix seconds) matching monotonic `now`."""
        return self.wall_started + (now - self.started)

    def snapshot(self, runtime: Any, now: float) -> dict[str, Any]:
        """Everything the view and `/status` show, as plain JSON-able data (no NaN/inf)."""
        self._note_config(runtime, now)
        config = getattr(runtime, "config", None)
        pools = getattr(runtime, "pools", {})
        live = _live_bytes(runtime)
        retired = getattr(runtime, "retired", ())
        out = {
            "version": self.version,
            "pid": self.pid,
            "time": self.wall(now),
            "started_at": self.wall_started,
            "uptime": now - self.started,
            "config": {
                "file": getattr(config, "file", ""),
                "loaded_at": self.wall(self.loaded_at),
                "loaded_ago": now - self.loaded_at,
                "reloads": getattr(runtime, "reloads", 0),
                "reload_attempts": getattr(runtime, "reload_attempts", 0),
                "reloading": getattr(runtime, "reloading", False),
                "last_reload_error": getattr(runtime, "last_reload_error", ""),
            },
            "listeners": [
                self._listener(name, listener, pools, live)
                for name, listener in getattr(runtime, "listeners", {}).items()
            ],
            "retired_sessions": sum(len(getattr(r, "sessions", ())) for r in retired),
            "pools": [self._pool(name, pool, live, now) for name, pool in pools.items()],
            "events": [
                {"time": self.wall(e.time), "ago": now - e.time, "kind": e.kind, "text": e.text}
                for e in reversed(self._events)
            ],
        }
        caches = getattr(runtime, "caches", None)
        if caches:  # [cache.NAME] stores (l7/cache/store.py), when a route uses one
            out["caches"] = [{"name": name, **store.report()} for name, store in caches.items()]
        return out

    def _listener(
        self, name: str, listener: Any, pools: dict[str, Any], live: dict[int, tuple[int, int]]
    ) -> dict[str, Any]:
        config = getattr(listener, "config", None)
        meters = self._listeners.get(name)
        bytes_in, bytes_out, source = _listener_bytes(listener, pools, live)
        out: dict[str, Any] = {
            "name": name,
            "protocol": getattr(config, "protocol", "tcp"),
            "bind": [str(a) for a in getattr(config, "bind", ())],
            "pool": getattr(config, "pool", None) or "",
            "pools": _listener_pools(listener),
            "accepting": bool(getattr(listener, "accepting", True)),
            "active": len(getattr(listener, "sessions", ())),
            "max_connections": getattr(config, "max_connections", 0),
            "total": getattr(listener, "total", 0),
            "conn_rate": meters.conn.rate if meters else 0.0,
            "requests": getattr(listener, "requests", 0),
            "req_rate": meters.req.rate if meters else 0.0,
            "bytes_in": bytes_in,
            "bytes_out": bytes_out,
            "bytes_source": source,
            "bytes_in_rate": meters.bytes_in.rate if meters else 0.0,
            "bytes_out_rate": meters.bytes_out.rate if meters else 0.0,
            "history": meters.conn.history() if meters else [],
        }
        for optional in OPTIONAL_LISTENER_COUNTERS:
            value = getattr(listener, optional, None)
            if isinstance(value, int):
                out[optional] = value
        guards = getattr(getattr(listener, "engine", None), "guards", None)
        if guards:  # http(s): routes' access rules and rate limits (l7.guard)
            out["route_guards"] = [guard.report() for guard in guards.values()]
        jwts = getattr(getattr(listener, "engine", None), "jwts", None)
        if jwts:  # http(s): routes' JWT validation (l7.jwtstage)
            out["route_jwt"] = [stage.report() for stage in jwts.values()]
        wafs = getattr(getattr(listener, "engine", None), "wafs", None)
        if wafs:  # http(s): the WAF of each route (l7/waf/), "-" for requests no route took
            out["route_wafs"] = [waf.report() for waf in wafs.values()]
        return out

    def _pool(
        self, name: str, pool: Any, live: dict[int, tuple[int, int]], now: float
    ) -> dict[str, Any]:
        config = getattr(pool, "config", None)
        servers = [self._server(name, s, live, now) for s in getattr(pool, "servers", ())]
        return {
            "name": name,
            "balance": getattr(config, "balance", ""),
            "health_checked": getattr(config, "health", None) is not None,
            "servers_up": sum(1 for s in servers if s["state"] in ("up", "slow_start")),
            "active": sum(s["active"] for s in servers),
            "total": sum(s["total"] for s in servers),
            "conn_rate": sum(s["conn_rate"] for s in servers),
            "servers": servers,
        }

    def _server(
        self, pool: str, server: Any, live: dict[int, tuple[int, int]], now: float
    ) -> dict[str, Any]:
        key = (pool, server.name)
        self._note_state(key, server, now)  # so the events never lag the state shown
        meters = self._servers.get(key)
        hist = self._latency.get(key)
        health = getattr(server, "health", None)
        extra_in, extra_out = live.get(id(server), (0, 0))
        ejected_until = getattr(server, "ejected_until", 0.0)
        # The server knows its health changes; drain, enable and the breaker are seen here.
        last_change = max(getattr(server, "last_change", now), self._changed.get(key, -math.inf))
        host, port = getattr(server, "host", ""), getattr(server, "port", 0)
        return {
            "name": server.name,
            "address": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
            "state": _state(server, now),
            "up": bool(getattr(health, "up", True)) and ejected_until <= now,
            "weight": getattr(server, "weight", 1),
            "weight_now": float(getattr(server, "weight_now", getattr(server, "weight", 1))),
            "backup": bool(getattr(server, "backup", False)),
            "draining": bool(getattr(server, "draining", False)),
            "active": getattr(server, "active", 0),
            "total": getattr(server, "total", 0),
            "conn_rate": meters.conn.rate if meters else 0.0,
            "bytes_in": getattr(server, "bytes_in", 0) + extra_in,
            "bytes_out": getattr(server, "bytes_out", 0) + extra_out,
            "bytes_in_rate": meters.bytes_in.rate if meters else 0.0,
            "bytes_out_rate": meters.bytes_out.rate if meters else 0.0,
            "connect_failures": getattr(server, "connect_failures", 0),
            "check": getattr(server, "last_check", ""),
            "health": {
                "up": bool(getattr(health, "up", True)),
                "rise": getattr(health, "rise", 0),
                "fall": getattr(health, "fall", 0),
                "streak": getattr(health, "streak", 0),
            },
            "ejected_for": max(ejected_until - now, 0.0),
            "last_change": self.wall(last_change),
            "last_change_ago": max(now - last_change, 0.0),
            "connect_count": hist.count if hist else 0,
            "connect_p50": hist.quantile(0.5) if hist else None,
            "connect_p99": hist.quantile(0.99) if hist else None,
            "history": meters.conn.history() if meters else [],
        }


def _state(server: Any, now: float) -> str:
    state = server.state(now) if hasattr(server, "state") else "up"
    return str(getattr(state, "value", state))


def _live_bytes(runtime: Any) -> dict[int, tuple[int, int]]:
    """Bytes moved so far by relays still running, per server object (keyed by `id`)."""
    out: dict[int, tuple[int, int]] = {}
    listeners = [*getattr(runtime, "listeners", {}).values(), *getattr(runtime, "retired", ())]
    for listener in listeners:
        for session in getattr(listener, "sessions", ()):
            relay = getattr(session, "relay", None)
            server = getattr(session, "server", None)
            if relay is None or server is None:
                continue
            bytes_in, bytes_out = out.get(id(server), (0, 0))
            out[id(server)] = (bytes_in + relay.bytes_in, bytes_out + relay.bytes_out)
    return out


def _listener_pools(listener: Any) -> list[str]:
    """Names of the pools a listener sends connections to: its default and its routes'."""
    config = getattr(listener, "config", None)
    names = [getattr(config, "pool", None)]
    names += [getattr(route, "pool", None) for route in getattr(config, "routes", ())]
    return list(dict.fromkeys(n for n in names if n))


def _listener_bytes(
    listener: Any, pools: dict[str, Any], live: dict[int, tuple[int, int]]
) -> tuple[int, int, str]:
    """A listener's own byte counters if it has them, else those of the pools it feeds (see
    the module doc)."""
    own_in, own_out = getattr(listener, "bytes_in", None), getattr(listener, "bytes_out", None)
    if isinstance(own_in, int) and isinstance(own_out, int):
        return own_in, own_out, "listener"
    total_in = total_out = 0
    for name in _listener_pools(listener):
        for server in getattr(pools.get(name), "servers", ()):
            extra_in, extra_out = live.get(id(server), (0, 0))
            total_in += getattr(server, "bytes_in", 0) + extra_in
            total_out += getattr(server, "bytes_out", 0) + extra_out
    return total_in, total_out, "pool"
