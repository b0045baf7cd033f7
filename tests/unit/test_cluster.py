"""Merging worker reports into one instance's snapshot (`reports.py`), and the supervisor's
stats registry and pure deciders (`cluster.py`).
Reports are made by the real `Stats` from runtime stand-ins (tests/unit/snapshots.py), as a
worker makes them; no process, socket or clock."""

from __future__ import annotations

import json
import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from l4lb.cluster import Backoff, ClusterStats, resolve_workers
from l4lb.metrics import exposition
from l4lb.reports import MergedHistogram, histogram_report, merge_histograms, merge_reports
from l4lb.stats import LatencyHistogram, Stats
from l4lb.tui import render_to_text
from tests.unit.snapshots import CONFIG, make_runtime

WALL = 1_700_000_000.0


def worker(index: int, *, totals: tuple[int, int], active: int = 0, latencies=(), down=False):
    """A report as worker `index` sends it: the CONFIG runtime with listener `web` and servers
    `a`, `b` of pool `api` having served `totals`, after two ticks a second apart."""
    rt = make_runtime(CONFIG, now=0.0)
    stats = Stats(0.0, WALL + index, pid=100 + index)
    a, b = rt.pools["api"].servers
    stats.tick(rt, 1.0)
    a.total, b.total = totals
    a.bytes_in, a.bytes_out = 10 * totals[0], 100 * totals[0]
    rt.listeners["web"].total = sum(totals)
    a.active = active
    for seconds in latencies:
        stats.connect_latency("api", "a").observe(seconds)
    if down:
        a.on_check(False, 1.5, "tcp: refused")
    stats.tick(rt, 2.0)
    report = {
        "worker": index,
        "pid": 100 + index,
        "snapshot": stats.snapshot(rt, 2.0),
        "histograms": [histogram_report(k, h) for k, h in stats.histograms()],
    }
    return json.loads(json.dumps(report, allow_nan=False))  # as it crosses the pipe


def server(snap: dict, name: str) -> dict:
    return next(s for p in snap["pools"] for s in p["servers"] if s["name"] == name)


def test_counters_and_gauges_are_summed():
    reports = [worker(0, totals=(3, 2), active=1), worker(1, totals=(4, 5), active=2)]
    merged = merge_reports(reports, WALL + 10)
    (web,) = merged["listeners"]
    assert web["total"] == 14 and web["name"] == "web"
    a, b = server(merged, "a"), server(merged, "b")
    assert (a["total"], b["total"], a["active"]) == (7, 7, 3)
    assert (a["bytes_in"], a["bytes_out"]) == (70, 700)
    assert a["conn_rate"] == pytest.approx(7.0)  # 3/s and 4/s over the last tick
    (pool,) = merged["pools"]
    assert (pool["total"], pool["active"], pool["servers_up"]) == (14, 3, 2)
    assert web["max_connections"] == 2 * 10_000  # each worker has its own limit


def test_down_wins_and_brings_its_reason():
    merged = merge_reports([worker(0, totals=(1, 1), down=True), worker(1, totals=(1, 1))], WALL)
    a = server(merged, "a")
    assert a["state"] == "down" and a["up"] is False
    assert a["check"] == "tcp: refused"
    assert merged["pools"][0]["servers_up"] == 1
    assert server(merged, "b")["state"] == "up"


def test_freshest_report_gives_the_state_when_none_is_down():
    old, new = worker(0, totals=(0, 0)), worker(1, totals=(0, 0))
    new["snapshot"]["pools"][0]["servers"][1]["state"] = "draining"
    new["snapshot"]["time"] = old["snapshot"]["time"] + 1
    assert server(merge_reports([new, old], WALL), "b")["state"] == "draining"
    old["snapshot"]["time"] += 2  # now the other one is fresher
    assert server(merge_reports([new, old], WALL), "b")["state"] == "up"


def test_latency_from_summed_buckets_equals_one_process_seeing_everything():
    fast, slow = [0.0003] * 90, [0.2] * 10
    reports = [worker(0, totals=(90, 0), latencies=fast), worker(1, totals=(10, 0), latencies=slow)]
    merged = merge_reports(reports, WALL, histograms=merge_histograms(reports))
    one = LatencyHistogram()
    for v in fast + slow:
        one.observe(v)
    a = server(merged, "a")
    assert a["connect_count"] == 100
    assert a["connect_p50"] == pytest.approx(one.quantile(0.5))
    assert a["connect_p99"] == pytest.approx(one.quantile(0.99))


def test_latency_without_buckets_is_weighted_p50_and_max_p99():
    reports = [worker(0, totals=(3, 0), latencies=[0.001] * 3)]
    reports.append(worker(1, totals=(1, 0), latencies=[0.1]))
    p50s = [server(r["snapshot"], "a")["connect_p50"] for r in reports]
    a = server(merge_reports(reports, WALL), "a")
    assert a["connect_count"] == 4
    assert a["connect_p50"] == pytest.approx((3 * p50s[0] + p50s[1]) / 4)
    assert a["connect_p99"] == pytest.approx(0.1)


def test_histories_add_up_aligned_on_the_newest_sample():
    r0, r1 = worker(0, totals=(2, 0)), worker(1, totals=(3, 0))
    r0["snapshot"]["pools"][0]["servers"][0]["history"] = [1.0, 2.0, 3.0]
    r1["snapshot"]["pools"][0]["servers"][0]["history"] = [10.0]
    assert server(merge_reports([r0, r1], WALL), "a")["history"] == [1.0, 2.0, 13.0]


def test_events_are_tagged_and_newest_first():
    r0, r1 = worker(0, totals=(0, 0), down=True), worker(1, totals=(0, 0))
    r1["snapshot"]["events"] = [{"time": WALL + 50, "ago": 0, "kind": "reload", "text": "r"}]
    events = merge_reports([r0, r1], WALL + 60)["events"]
    texts = [e["text"] for e in events]
    assert texts == ["worker 1: r", "worker 0: api/a up -> down (tcp: refused)"]
    assert events[0]["ago"] == pytest.approx(10.0)


def test_a_listener_or_server_known_to_one_worker_only_is_kept():
    r0, r1 = worker(0, totals=(1, 0)), worker(1, totals=(1, 0))
    del r1["snapshot"]["pools"][0]["servers"][1]  # worker 1 reloaded without b
    merged = merge_reports([r0, r1], WALL)
    assert [s["name"] for s in merged["pools"][0]["servers"]] == ["a", "b"]
    assert server(merged, "a")["total"] == 2


def test_merged_histogram_adds_buckets_and_rejects_others():
    h = MergedHistogram()
    one = LatencyHistogram()
    one.observe(0.001)
    report = histogram_report(("p", "s"), one)
    h.add(report["counts"], report["sum"], report["min"], report["max"])
    h.add(report["counts"], report["sum"], report["min"], report["max"])
    assert h.count == 2 and h.sum == pytest.approx(0.002) and h.min == h.max == 0.001
    empty = histogram_report(("p", "s"), LatencyHistogram())
    assert empty["min"] is None and not math.isinf(empty["max"])
    h.add(empty["counts"], 0.0, None, 0.0)
    assert h.count == 2
    with pytest.raises(ValueError):
        h.add([1, 2], 1.0, 1.0, 1.0)


def test_cluster_stats_keeps_counters_of_exited_workers():
    stats = ClusterStats(0.0, WALL, pid=1)
    runtime = make_runtime()
    stats.started_worker(0, 100, 0.0)
    stats.started_worker(1, 101, 0.0)
    stats.update(0, worker(0, totals=(3, 2), active=1, latencies=[0.001]), 1.0)
    stats.update(1, worker(1, totals=(4, 5), latencies=[0.002]), 1.0)
    before = stats.snapshot(runtime, 2.0)
    stats.exited(1)
    stats.started_worker(1, 102, 3.0)  # restarted: nothing reported yet
    after = stats.snapshot(runtime, 3.5)
    assert after["listeners"][0]["total"] == before["listeners"][0]["total"] == 14
    assert server(after, "a")["total"] == 7 and server(after, "a")["active"] == 1
    assert server(after, "a")["connect_count"] == 2
    assert dict(stats.histograms())[("api", "a")].count == 2
    workers = after["workers"]
    assert [(w["index"], w["pid"], w["restarts"]) for w in workers] == [(0, 100, 0), (1, 102, 1)]
    assert workers[0]["servers"] == {"api": {"a": 3, "b": 2}} and workers[1]["total"] == 0
    stats.reloaded(4.0, {"web"}, {("api", "b")})  # a reload removed server a
    assert server(stats.snapshot(runtime, 4.0), "a")["total"] == 3  # worker 0's own only


def test_cluster_stats_snapshot_feeds_metrics_and_the_view():
    stats = ClusterStats(0.0, WALL, pid=1)
    runtime = make_runtime()
    stats.update(0, worker(0, totals=(3, 2), latencies=[0.001]), 1.0)
    stats.update(1, worker(1, totals=(4, 5), latencies=[0.002, 0.003]), 1.0)
    stats.event(1.0, "worker_exit", "worker 1 (pid 101) was killed by SIGKILL")
    snap = stats.snapshot(runtime, 2.0)
    json.dumps(snap, allow_nan=False)
    assert snap["pid"] == 1 and snap["events"][0]["kind"] == "worker_exit"
    families = {f.name: f for f in text_string_to_metric_families(exposition(snap, stats))}
    totals = {s.labels["server"]: s.value for s in families["l4lb_server_connections"].samples}
    assert totals == {"a": 7, "b": 7}
    counts = [
        s.value
        for s in families["l4lb_server_connect_seconds"].samples
        if s.name.endswith("_count") and s.labels["server"] == "a"
    ]
    assert counts == [3]
    text = render_to_text(snap, 120, 40)
    assert "killed by SIGKILL" in text and "site.toml" in text


def test_backoff_grows_for_quick_deaths_and_resets_after_a_healthy_run():
    b = Backoff(initial=0.5, maximum=4.0, healthy=10.0)
    assert [b.delay(0.0, 1.0) for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert b.delay(0.0, 10.0) == 0.0
    assert b.delay(10.0, 11.0) == 0.5


def test_workers_zero_means_one_per_cpu():
    assert resolve_workers(3, cpus=8) == 3
    assert resolve_workers(0, cpus=8) == 8
    assert resolve_workers(0, cpus=0) == 1
    assert resolve_workers(0) >= 1


# -- reload_outcome ------------------------------------------------------------------------


def _report(attempts: int, error: str = "") -> dict:
    return {"snapshot": {"config": {"reload_attempts": attempts, "last_reload_error": error}}}


def test_reload_outcome_waits_for_every_signalled_worker():
    from l4lb.cluster import reload_outcome

    signalled = {0: (100, 0), 1: (101, 0)}
    assert reload_outcome(signalled, {0: (100, _report(1)), 1: (101, _report(0))}) is None
    assert reload_outcome(signalled, {0: (100, _report(1)), 1: (101, None)}) is None
    assert reload_outcome(signalled, {0: (100, _report(1)), 1: (101, _report(1))}) == []


def test_reload_outcome_names_refusing_workers_and_skips_dead_or_replaced_ones():
    from l4lb.cluster import reload_outcome

    signalled = {0: (100, 2), 1: (101, 2), 2: (102, 2)}
    reports = {0: (100, _report(3, "cannot listen on 127.0.0.1:1")), 1: (555, _report(0))}
    assert reload_outcome(signalled, reports) == ["worker 0: cannot listen on 127.0.0.1:1"]
    assert reload_outcome({}, {}) == []
