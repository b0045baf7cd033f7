"""The supervisor's view of its workers: a stats registry made of their reports, the restart
backoff, and what `workers = 0` means. Sans-IO: times are passed in.

The supervisor (`supervisor.py`) feeds `ClusterStats` each worker's report (`reports.py`),
once a second, and asks for a snapshot when the admin API, `/metrics` or the live view wants
one.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from l4lb import __version__
from l4lb.reports import MAX_EVENTS, Carried, Key, merge_caches, merge_histograms, merge_reports
from l4lb.stats import LatencyHistogram

__all__ = ["Backoff", "ClusterStats", "reload_outcome", "resolve_workers"]


def resolve_workers(setting: int, cpus: int | None = None) -> int:
    """`global.workers` as a process count: 0 means one per CPU this process may run on
    (the affinity mask, which a container's cpuset or `taskset` narrows; `os.cpu_count()`
    would count the host's CPUs)."""
    if setting > 0:
        return setting
    if cpus is None:
        try:
            cpus = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            cpus = os.cpu_count() or 1
    return max(cpus, 1)


class Backoff:
    """How long to wait before restarting a worker that exited.

    A worker that ran at least `healthy` seconds is restarted at once. One that died sooner
    waits `initial` seconds, then twice as long after each further quick death, up to
    `maximum`: a worker that crashes at start (a bad certificate, a port taken) is retried
    without spinning a CPU or flooding the log. Times are monotonic seconds, passed in.
    """

    def __init__(self, initial: float = 0.5, maximum: float = 30.0, healthy: float = 10.0):
        self.initial = initial
        self.maximum = maximum
        self.healthy = healthy
        self.failures = 0  # quick deaths in a row

    def delay(self, started: float, now: float) -> float:
        """Seconds to wait before starting the worker again, which exited at `now` after
        starting at `started`."""
        if now - started >= self.healthy:
            self.failures = 0
            return 0.0
        self.failures += 1
        return min(self.initial * 2 ** (self.failures - 1), self.maximum)


@dataclass
class _Worker:
    index: int
    pid: int = 0
    alive: bool = False
    starts: int = 0
    started: float = 0.0
    report: Mapping[str, Any] | None = None
    received: float = 0.0  # when the report came (monotonic)


class ClusterStats:
    """The supervisor's stats registry, shaped like `Stats` where the admin API, `/metrics`
    and the live view read it (`snapshot(runtime, now)`, `histograms()`, `event(...)`).

    `runtime` is the supervisor, read duck-typed as `Stats` reads a runtime: `config.file`
    and `reloads`. `now` is monotonic seconds; `wall` the matching time of day at start.
    """

    def __init__(
        self, now: float, wall: float, *, pid: int | None = None, version: str = __version__
    ) -> None:
        self.started = now
        self.wall_started = wall
        self.loaded_at = now
        self.pid = os.getpid() if pid is None else pid
        self.version = version
        self.carried = Carried()
        self._workers: dict[int, _Worker] = {}
        self._events: deque[dict[str, Any]] = deque(maxlen=MAX_EVENTS)

    def wall(self, now: float) -> float:
        return self.wall_started + (now - self.started)

    # -- inputs ------------------------------------------------------------------------------

    def event(self, now: float, kind: str, text: str) -> None:
        """An event of the supervisor's own (worker exits, reloads)."""
        self._events.appendleft({"time": self.wall(now), "kind": kind, "text": text})

    def operator(self, now: float, pool: str, server: Any, action: str, by: str) -> None:
        """As `Stats.operator`: the workers report the state change itself a tick later."""
        done = "drained" if action == "drain" else "enabled"
        self.event(now, action, f"{pool}/{server.name} {done}, from {by}")

    def started_worker(self, index: int, pid: int, now: float) -> None:
        worker = self._workers.setdefault(index, _Worker(index))
        worker.pid, worker.alive, worker.started, worker.report = pid, True, now, None
        worker.starts += 1

    def update(self, index: int, report: Mapping[str, Any], now: float) -> None:
        """The latest report of worker `index`."""
        worker = self._workers.setdefault(index, _Worker(index))
        worker.report, worker.received = report, now

    def exited(self, index: int) -> None:
        """Worker `index` is gone: keep its counters, drop its gauges."""
        worker = self._workers.get(index)
        if worker is None:
            return
        if worker.report is not None:
            self.carried.fold(worker.report)
        worker.alive, worker.report = False, None

    def reloaded(self, now: float, listeners: set[str], servers: set[Key]) -> None:
        self.loaded_at = now
        self.carried.prune(listeners, servers)

    # -- outputs -----------------------------------------------------------------------------

    def report_of(self, index: int) -> Mapping[str, Any] | None:
        """The latest report of worker `index` (None: none since it started)."""
        worker = self._workers.get(index)
        return worker.report if worker is not None else None

    def reports(self) -> list[Mapping[str, Any]]:
        return [w.report for w in self._workers.values() if w.report is not None]

    def histograms(self) -> Iterator[tuple[Key, LatencyHistogram]]:
        """Every `((pool, server), histogram)`, summed over the workers, for `/metrics`."""
        return iter(merge_histograms(self.reports(), self.carried.histograms).items())

    def snapshot(self, runtime: Any, now: float) -> dict[str, Any]:
        """The instance as one `Stats.snapshot`, plus `workers`: one entry per worker."""
        wall = self.wall(now)
        reports = self.reports()
        merged = merge_reports(
            reports,
            wall,
            carried=self.carried,
            histograms=merge_histograms(reports, self.carried.histograms),
        )
        own = [{**e, "ago": max(wall - e["time"], 0.0)} for e in self._events]
        events = sorted([*merged["events"], *own], key=lambda e: e["time"], reverse=True)
        config = getattr(runtime, "config", None)
        out = {
            "version": self.version,
            "pid": self.pid,
            "time": wall,
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
            "listeners": merged["listeners"],
            "retired_sessions": merged["retired_sessions"],
            "pools": merged["pools"],
            "events": events[:MAX_EVENTS],
            "workers": [self._worker(w, now) for _, w in sorted(self._workers.items())],
        }
        caches = merge_caches([r.get("snapshot", {}) for r in reports], self.carried)
        if caches:
            out["caches"] = caches
        return out

    def _worker(self, worker: _Worker, now: float) -> dict[str, Any]:
        snap = worker.report.get("snapshot", {}) if worker.report else {}
        listeners = snap.get("listeners", ())
        return {
            "index": worker.index,
            "pid": worker.pid,
            "alive": worker.alive,
            "restarts": max(worker.starts - 1, 0),
            "uptime": now - worker.started if worker.alive else 0.0,
            "report_ago": now - worker.received if worker.report else None,
            "active": sum(int(lst.get("active", 0)) for lst in listeners),
            "total": sum(int(lst.get("total", 0)) for lst in listeners),
            "servers": {
                pool["name"]: {s["name"]: int(s.get("total", 0)) for s in pool.get("servers", ())}
                for pool in snap.get("pools", ())
            },
            # the servers this worker keeps out of rotation as down (health or ejection)
            "down": [
                f"{pool['name']}/{s['name']}"
                for pool in snap.get("pools", ())
                for s in pool.get("servers", ())
                if not s.get("up", True)
            ],
        }


def reload_outcome(
    signalled: Mapping[int, tuple[int, int]], reports: Mapping[int, tuple[int, Any]]
) -> list[str] | None:
    """Whether the workers have all reported a reload the supervisor sent them.

    `signalled` is worker index -> (pid, its `reload_attempts` when signalled); `reports` is
    worker index -> (pid, its latest report or None) for the workers alive now. A worker that
    died, or was replaced by a new process (which started on the new config), has nothing
    left to report. Returns None while one is still to report, else the errors the workers
    gave (`worker N: ...`, empty when every one applied the reload)."""
    errors = []
    for index, (pid, before) in signalled.items():
        now_pid, report = reports.get(index, (0, None))
        if now_pid != pid:
            continue
        config = (report or {}).get("snapshot", {}).get("config", {})
        if int(config.get("reload_attempts", -1)) <= before:
            return None
        if config.get("last_reload_error"):
            errors.append(f"worker {index}: {config['last_reload_error']}")
    return errors
