"""Worker reports and their merge: one instance's stats out of N worker processes.

Sans-IO, like `stats.py`: nothing here reads a clock, a socket or a process.

A report is what a worker knows about itself, sent to the supervisor once a second as one
JSON line:
    {"worker": 0, "pid": 1234, "snapshot": Stats.snapshot(...), "histograms": [
        {"pool": "p", "server": "a", "counts": [...], "sum": 0.01, "min": 1e-4, "max": 3e-3}]}
`counts` are the connect-latency histogram's per-bucket counts (not cumulative), so they add.

Merge rules (`merge_reports`), per listener and per server, matched by name:
- Counters and gauges are summed: active, total, bytes, rates, connect failures,
  `max_connections` (each worker enforces its own limit, so the instance takes the sum).
- A server's state is the freshest report's, except that `down` wins when workers disagree:
  each worker runs its own health checks and passive ejection, and a server that one worker
  cannot reach is worth an operator's attention. `up` is true only if every worker says so.
- Connect latency: histograms with the same buckets merge by addition, so p50 and p99 are
  estimated from the summed buckets, the same estimate one process would make (and `/metrics`
  exports the summed buckets). Given snapshots without histograms, p50 is the count-weighted
  mean of the workers' p50s and p99 the max of their p99s: an approximation, a quantile of
  a union is not a function of the parts' quantiles.
- Events are merged newest first, each prefixed with the worker that saw it.
- Caches (`caches`, by name, and their `routes` by listener and route): every number is
  summed, gauges too (`bytes`, `objects`, `max_bytes`), since each worker keeps its own
  memory store with its own bound; the disk tier's (`disk_*`) are the largest report's, the
  directory being one for all.

A worker that exits takes its live counters with it; `Carried` keeps the counters of its
last report (and its histograms and events), so the instance's counters never go backwards
when a worker is restarted (prometheus_client's multiprocess mode does the same for dead
pids). What the worker counted after its last report, at most a second, is lost.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from l4lb.stats import OPTIONAL_LISTENER_COUNTERS, LatencyHistogram

__all__ = [
    "MAX_EVENTS",
    "Carried",
    "Key",
    "MergedHistogram",
    "histogram_report",
    "merge_caches",
    "merge_histograms",
    "merge_reports",
]

Key = tuple[str, str]  # (pool, server)

LISTENER_COUNTERS = ("total", "requests", "bytes_in", "bytes_out", *OPTIONAL_LISTENER_COUNTERS)
LISTENER_GAUGES = (
    "active",
    "conn_rate",
    "req_rate",
    "bytes_in_rate",
    "bytes_out_rate",
    "max_connections",
)
SERVER_COUNTERS = ("total", "bytes_in", "bytes_out", "connect_failures")
SERVER_GAUGES = ("active", "conn_rate", "bytes_in_rate", "bytes_out_rate")
# Fields that explain a server's state: taken together from the report that decided it.
_STATE_FIELDS = ("state", "check", "health", "ejected_for", "last_change", "last_change_ago")
MAX_EVENTS = 100
CACHE_COUNTERS = ("hits", "misses", "stale", "stored", "evictions", "purged")
CACHE_GAUGES = ("objects", "bytes", "max_bytes")
ROUTE_CACHE_COUNTERS = ("hits", "misses", "stale", "stored")
DISK_GAUGES = ("disk_bytes", "disk_files", "disk_max_bytes")  # one shared directory: max


class MergedHistogram(LatencyHistogram):
    """A latency histogram built by adding other processes' bucket counts (see the module
    doc); it estimates quantiles and exports buckets like the ones it sums."""

    __slots__ = ()

    def add(self, counts: Sequence[int], total: float, low: float | None, high: float) -> None:
        """Add one histogram: per-bucket `counts` (the last is +Inf), the `total` of its
        observations, their smallest (`low`, None when empty) and largest (`high`) value.
        Raises ValueError if the buckets differ from this histogram's."""
        if len(counts) != len(self._counts):
            raise ValueError(f"expected {len(self._counts)} bucket counts, got {len(counts)}")
        n = 0
        for i, c in enumerate(counts):
            self._counts[i] += int(c)
            n += int(c)
        if not n:
            return
        self.count += n
        self.sum += float(total)
        if low is not None:
            self.min = min(self.min, float(low))
        self.max = max(self.max, float(high))


def histogram_report(key: Key, hist: LatencyHistogram) -> dict[str, Any]:
    """One server's histogram as a report carries it (JSON-able, no inf)."""
    counts, before = [], 0
    for _, cumulative in hist.buckets():
        counts.append(cumulative - before)
        before = cumulative
    return {
        "pool": key[0],
        "server": key[1],
        "counts": counts,
        "sum": hist.sum,
        "min": hist.min if hist.count else None,
        "max": hist.max,
    }


def merge_histograms(
    reports: Sequence[Mapping[str, Any]], into: Mapping[Key, MergedHistogram] | None = None
) -> dict[Key, MergedHistogram]:
    """The sum, per (pool, server), of the reports' histograms and of those in `into` (left
    unchanged). A histogram whose buckets do not match is skipped."""
    out: dict[Key, MergedHistogram] = {}
    for key, hist in (into or {}).items():
        out[key] = _copy(hist)
    for report in reports:
        for h in report.get("histograms", ()):
            key = (h["pool"], h["server"])
            merged = out.get(key) or out.setdefault(key, MergedHistogram())
            try:
                merged.add(h["counts"], h["sum"], h.get("min"), h["max"])
            except (KeyError, TypeError, ValueError):
                continue
    return out


def _copy(hist: MergedHistogram) -> MergedHistogram:
    out = MergedHistogram(hist.bounds)
    counts, before = [], 0
    for _, cumulative in hist.buckets():
        counts.append(cumulative - before)
        before = cumulative
    out.add(counts, hist.sum, hist.min if hist.count else None, hist.max)
    return out


@dataclass
class Carried:
    """Counters, histograms and events of workers that exited (see the module doc)."""

    listeners: dict[str, dict[str, int]] = field(default_factory=dict)
    servers: dict[Key, dict[str, int]] = field(default_factory=dict)
    histograms: dict[Key, MergedHistogram] = field(default_factory=dict)
    caches: dict[str, dict[str, int]] = field(default_factory=dict)
    cache_routes: dict[tuple[str, str, str], dict[str, int]] = field(default_factory=dict)
    events: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MAX_EVENTS))

    def fold(self, report: Mapping[str, Any]) -> None:
        """Keep the counters of a worker's last report."""
        snap = report.get("snapshot", {})
        for lst in snap.get("listeners", ()):
            kept = self.listeners.setdefault(lst["name"], {})
            for k in LISTENER_COUNTERS:
                if isinstance(lst.get(k), int):
                    kept[k] = kept.get(k, 0) + lst[k]
        for pool in snap.get("pools", ()):
            for server in pool.get("servers", ()):
                kept = self.servers.setdefault((pool["name"], server["name"]), {})
                for k in SERVER_COUNTERS:
                    kept[k] = kept.get(k, 0) + int(server.get(k, 0))
        for cache in snap.get("caches", ()):
            kept = self.caches.setdefault(cache["name"], {})
            for k in CACHE_COUNTERS:
                kept[k] = kept.get(k, 0) + int(cache.get(k, 0))
            for r in cache.get("routes", ()):
                key = (cache["name"], r["listener"], r["route"])
                kept = self.cache_routes.setdefault(key, {})
                for k in ROUTE_CACHE_COUNTERS:
                    kept[k] = kept.get(k, 0) + int(r.get(k, 0))
        self.histograms = merge_histograms([report], self.histograms)
        for event in reversed(_tagged_events(report)):
            self.events.appendleft(event)

    def prune(self, listeners: set[str], servers: set[Key]) -> None:
        """Forget what belongs to listeners and servers no longer configured (a reload drops
        their series, as in a single process)."""
        self.listeners = {k: v for k, v in self.listeners.items() if k in listeners}
        self.servers = {k: v for k, v in self.servers.items() if k in servers}
        self.histograms = {k: v for k, v in self.histograms.items() if k in servers}


def merge_reports(
    reports: Sequence[Mapping[str, Any]],
    wall: float,
    *,
    carried: Carried | None = None,
    histograms: Mapping[Key, LatencyHistogram] | None = None,
) -> dict[str, Any]:
    """The `listeners`, `pools`, `retired_sessions` and `events` of one snapshot made of the
    workers' `reports` (see the module doc for the rules). `wall` is the time of day now,
    for the `*_ago` fields; `carried` adds exited workers' counters; `histograms` (merged,
    per pool and server) give the connect latency."""
    carried = carried or Carried()
    ordered = sorted(reports, key=lambda r: r.get("snapshot", {}).get("time", 0.0))
    snaps = [r.get("snapshot", {}) for r in ordered]
    listeners: dict[str, list[Mapping[str, Any]]] = {}
    pools: dict[str, list[Mapping[str, Any]]] = {}
    for snap in reversed(snaps):  # the freshest config's order first
        for lst in snap.get("listeners", ()):
            listeners.setdefault(lst["name"], [])
        for pool in snap.get("pools", ()):
            pools.setdefault(pool["name"], [])
    for snap in snaps:  # oldest first: each list ends with the freshest part
        for lst in snap.get("listeners", ()):
            listeners[lst["name"]].append(lst)
        for pool in snap.get("pools", ()):
            pools[pool["name"]].append(pool)
    events = [e for r in ordered for e in _tagged_events(r)] + list(carried.events)
    events.sort(key=lambda e: e.get("time", 0.0), reverse=True)
    return {
        "listeners": [
            _merge_listener(parts, carried.listeners.get(name, {}))
            for name, parts in listeners.items()
        ],
        "retired_sessions": sum(int(s.get("retired_sessions", 0)) for s in snaps),
        "pools": [
            _merge_pool(name, parts, carried, histograms or {}, wall)
            for name, parts in pools.items()
        ],
        "events": [{**e, "ago": max(wall - e.get("time", wall), 0.0)} for e in events][:MAX_EVENTS],
    }


def merge_caches(
    snaps: Sequence[Mapping[str, Any]], carried: Carried | None = None
) -> list[dict[str, Any]]:
    """The `caches` of one snapshot made of the workers' (see the module doc)."""
    carried = carried or Carried()
    caches: dict[str, dict[str, Any]] = {}
    routes: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
    for name in carried.caches:
        caches[name] = {"name": name, **dict.fromkeys((*CACHE_COUNTERS, *CACHE_GAUGES), 0)}
    for snap in snaps:
        for cache in snap.get("caches", ()):
            out = caches.setdefault(
                cache["name"],
                {"name": cache["name"], **dict.fromkeys((*CACHE_COUNTERS, *CACHE_GAUGES), 0)},
            )
            for k in (*CACHE_COUNTERS, *CACHE_GAUGES):
                out[k] += int(cache.get(k, 0))
            for k in DISK_GAUGES:
                if k in cache:
                    out[k] = max(out.get(k, 0), int(cache[k]))
            for r in cache.get("routes", ()):
                key = (r["listener"], r["route"])
                merged = routes.setdefault(cache["name"], {}).setdefault(
                    key,
                    {"listener": key[0], "route": key[1], **dict.fromkeys(ROUTE_CACHE_COUNTERS, 0)},
                )
                for k in ROUTE_CACHE_COUNTERS:
                    merged[k] += int(r.get(k, 0))
    for name, kept in carried.caches.items():
        for k in CACHE_COUNTERS:
            caches[name][k] += kept.get(k, 0)
    for (name, listener, route), kept in carried.cache_routes.items():
        merged = routes.setdefault(name, {}).setdefault(
            (listener, route),
            {"listener": listener, "route": route, **dict.fromkeys(ROUTE_CACHE_COUNTERS, 0)},
        )
        for k in ROUTE_CACHE_COUNTERS:
            merged[k] += kept.get(k, 0)
    return [{**c, "routes": list(routes.get(n, {}).values())} for n, c in caches.items()]


def _tagged_events(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    worker = report.get("worker", "?")
    return [
        {**e, "text": f"worker {worker}: {e.get('text', '')}"}
        for e in report.get("snapshot", {}).get("events", ())
    ]


def _sum_series(series: Sequence[Sequence[float]]) -> list[float]:
    """Element-wise sum of histories, aligned on their newest (last) element."""
    length = max((len(s) for s in series), default=0)
    out = [0.0] * length
    for s in series:
        for i, value in enumerate(s, start=length - len(s)):
            out[i] += value
    return out


def _sum_fields(
    out: dict[str, Any],
    parts: Sequence[Mapping[str, Any]],
    names: Sequence[str],
    kept: Mapping[str, int] | None = None,
) -> None:
    for k in names:
        if any(k in p for p in parts) or (kept and k in kept):
            out[k] = sum(p.get(k, 0) for p in parts) + (kept.get(k, 0) if kept else 0)


# The per-route reports of the HTTP stages (rate limits, WAF, JWT): summed over the workers,
# route by route (and limit by limit), but for these, which say a state, not a count.
_ROUTE_REPORTS = ("route_guards", "route_wafs", "route_jwt")
_STATES = frozenset({"redis_up", "redis_connected"})


def _merge_counts(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One worker's report shape, with its integer counters summed over `parts` (states:
    the lowest), lists of named reports merged by name, the rest from the freshest part."""
    out = dict(parts[-1])
    for key, value in out.items():
        values = [p[key] for p in parts if key in p]
        if isinstance(value, bool) or not values:
            continue
        if isinstance(value, int):
            ints = [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
            out[key] = min(ints) if key in _STATES else sum(ints)
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            out[key] = _merge_named([v for v in values if isinstance(v, list)], "name")
    return out


def _merge_named(lists: Sequence[Sequence[Mapping[str, Any]]], field: str) -> list[dict]:
    groups: dict[Any, list[Mapping[str, Any]]] = {}
    for items in lists:
        for item in items:
            groups.setdefault(item.get(field), []).append(item)
    return [_merge_counts(group) for group in groups.values()]


def _merge_listener(parts: Sequence[Mapping[str, Any]], kept: Mapping[str, int]) -> dict:
    out = dict(parts[-1])
    for key in _ROUTE_REPORTS:
        lists = [p[key] for p in parts if key in p]
        if lists:
            out[key] = _merge_named(lists, "route")
    _sum_fields(out, parts, LISTENER_COUNTERS, kept)
    _sum_fields(out, parts, LISTENER_GAUGES)
    out["accepting"] = any(p.get("accepting", True) for p in parts)
    out["history"] = _sum_series([p.get("history", ()) for p in parts])
    return out


def _merge_pool(
    name: str,
    parts: Sequence[Mapping[str, Any]],
    carried: Carried,
    histograms: Mapping[Key, LatencyHistogram],
    wall: float,
) -> dict[str, Any]:
    servers: dict[str, list[Mapping[str, Any]]] = {}
    for pool in reversed(parts):
        for s in pool.get("servers", ()):
            servers.setdefault(s["name"], [])
    for pool in parts:
        for s in pool.get("servers", ()):
            servers[s["name"]].append(s)
    merged = [
        _merge_server(
            group,
            carried.servers.get((name, server), {}),
            histograms.get((name, server)),
            wall,
        )
        for server, group in servers.items()
    ]
    fresh = parts[-1]
    return {
        **fresh,
        "servers_up": sum(1 for s in merged if s["state"] in ("up", "slow_start")),
        "active": sum(s["active"] for s in merged),
        "total": sum(s["total"] for s in merged),
        "conn_rate": sum(s["conn_rate"] for s in merged),
        "servers": merged,
    }


def _merge_server(
    parts: Sequence[Mapping[str, Any]],
    kept: Mapping[str, int],
    hist: LatencyHistogram | None,
    wall: float,
) -> dict[str, Any]:
    out = dict(parts[-1])
    down = [p for p in parts if p.get("state") == "down"]
    decider = down[-1] if down else parts[-1]
    for k in _STATE_FIELDS:
        if k in decider:
            out[k] = decider[k]
    if "last_change" in out:
        out["last_change_ago"] = max(wall - out["last_change"], 0.0)
    out["up"] = all(p.get("up", True) for p in parts)
    out["ejected_for"] = max(float(p.get("ejected_for", 0.0)) for p in parts)
    _sum_fields(out, parts, SERVER_COUNTERS, kept)
    _sum_fields(out, parts, SERVER_GAUGES)
    out["history"] = _sum_series([p.get("history", ()) for p in parts])
    if hist is not None:
        out["connect_count"] = hist.count
        out["connect_p50"] = hist.quantile(0.5)
        out["connect_p99"] = hist.quantile(0.99)
    else:
        counted = [p for p in parts if p.get("connect_count") and p.get("connect_p50") is not None]
        count = sum(p["connect_count"] for p in counted)
        out["connect_count"] = sum(int(p.get("connect_count", 0)) for p in parts)
        out["connect_p50"] = (
            sum(p["connect_p50"] * p["connect_count"] for p in counted) / count if count else None
        )
        p99s = [p["connect_p99"] for p in parts if p.get("connect_p99") is not None]
        out["connect_p99"] = max(p99s) if p99s else None
    return out
