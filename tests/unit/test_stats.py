"""The stats registry: histograms, rate meters, events and the snapshot. No sockets, no clock:
pools and servers are the real objects built from a config; listeners are plain stand-ins
with the attributes the runtime's listeners have."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from l4lb import __version__
from l4lb.config import load_text
from l4lb.stats import DEFAULT_BOUNDS, LatencyHistogram, RateMeter, Stats
from tests.unit.snapshots import CONFIG, make_runtime

# -- LatencyHistogram ------------------------------------------------------------------------


def test_histogram_empty_has_no_quantile():
    h = LatencyHistogram()
    assert h.count == 0 and h.sum == 0.0
    assert h.quantile(0.5) is None
    assert h.buckets()[-1] == (math.inf, 0)


def test_histogram_quantiles_land_in_the_right_bucket():
    h = LatencyHistogram()
    for _ in range(90):
        h.observe(0.0003)  # bucket (0.00025, 0.0005]
    for _ in range(10):
        h.observe(0.2)  # bucket (0.1, 0.25]
    assert h.count == 100
    assert h.sum == pytest.approx(90 * 0.0003 + 10 * 0.2)
    assert 0.00025 <= h.quantile(0.5) <= 0.0005
    assert 0.1 <= h.quantile(0.99) <= 0.25
    assert h.quantile(0.0) == pytest.approx(0.0003)  # clamped to the smallest value seen
    assert h.quantile(1.0) == pytest.approx(0.2)  # and to the largest


def test_histogram_value_on_a_bound_counts_in_that_bucket():
    h = LatencyHistogram()
    h.observe(0.001)
    cumulative = dict(h.buckets())
    assert cumulative[0.0005] == 0
    assert cumulative[0.001] == 1


def test_histogram_beyond_last_bound_uses_max():
    h = LatencyHistogram()
    h.observe(45.0)
    assert h.buckets()[-2] == (DEFAULT_BOUNDS[-1], 0)
    assert h.buckets()[-1] == (math.inf, 1)
    assert h.quantile(0.99) == pytest.approx(45.0)


def test_histogram_rejects_bad_input():
    with pytest.raises(ValueError):
        LatencyHistogram([0.1, 0.1])
    with pytest.raises(ValueError):
        LatencyHistogram().quantile(1.5)
    h = LatencyHistogram()
    h.observe(-1.0)
    h.observe(float("nan"))
    assert h.count == 2 and h.sum == 0.0


@given(st.lists(st.floats(min_value=0.0, max_value=100.0), min_size=1, max_size=200))
def test_histogram_properties(values):
    h = LatencyHistogram()
    for v in values:
        h.observe(v)
    counts = [n for _, n in h.buckets()]
    assert counts == sorted(counts)  # cumulative
    assert counts[-1] == len(values)
    estimates = [h.quantile(q) for q in (0.0, 0.25, 0.5, 0.9, 0.99, 1.0)]
    assert estimates == sorted(estimates)  # monotone in q
    assert all(min(values) - 1e-12 <= e <= max(values) + 1e-12 for e in estimates)


# -- RateMeter -------------------------------------------------------------------------------


def test_rate_meter_per_second_and_history():
    m = RateMeter(history=60)
    assert m.sample(100.0, 0) == 0.0  # baseline only
    assert m.history() == []
    assert m.sample(101.0, 10) == 10.0
    assert m.sample(103.0, 30) == 10.0  # 20 over 2 s
    assert m.history() == [10.0, 10.0]
    for i in range(100):
        m.sample(104.0 + i, 30 + i * 5)
    assert len(m.history()) == 60
    assert m.rate == 5.0


def test_rate_meter_counter_reset_and_same_time():
    m = RateMeter()
    m.sample(0.0, 100)
    assert m.sample(1.0, 7) == 7.0  # went down: a new counter from zero
    assert m.sample(1.0, 50) == 7.0  # no time passed: rate unchanged, no sample
    assert m.history() == [7.0]


# -- Stats -----------------------------------------------------------------------------------


def test_tick_gives_rates_for_listeners_and_servers():
    rt = make_runtime()
    stats = Stats(0.0, 1_700_000_000.0, pid=42)
    a = rt.pools["api"].servers[0]
    stats.tick(rt, 1.0)
    rt.listeners["web"].total = 20
    a.total = 20
    a.bytes_in, a.bytes_out = 2000, 8000
    stats.tick(rt, 2.0)
    snap = stats.snapshot(rt, 2.0)
    (web,) = snap["listeners"]
    assert web["conn_rate"] == 20.0
    assert web["bytes_in_rate"] == 2000.0 and web["bytes_out_rate"] == 8000.0
    assert web["bytes_source"] == "pool"
    assert web["history"] == [20.0]
    server = snap["pools"][0]["servers"][0]
    assert server["conn_rate"] == 20.0 and server["history"] == [20.0]
    assert server["bytes_in"] == 2000 and server["bytes_out_rate"] == 8000.0


def test_live_relay_bytes_count_before_the_connection_ends():
    rt = make_runtime()
    stats = Stats(0.0, 0.0)
    a = rt.pools["api"].servers[0]
    relay = SimpleNamespace(bytes_in=0, bytes_out=0)
    rt.listeners["web"].sessions = [SimpleNamespace(server=a, relay=relay)]
    stats.tick(rt, 1.0)
    relay.bytes_in, relay.bytes_out = 500, 1500
    stats.tick(rt, 2.0)
    snap = stats.snapshot(rt, 2.0)
    server = snap["pools"][0]["servers"][0]
    assert server["bytes_in"] == 500 and server["bytes_in_rate"] == 500.0
    assert snap["listeners"][0]["bytes_out"] == 1500
    assert snap["listeners"][0]["active"] == 1


def test_routed_listener_counts_the_bytes_of_every_pool_it_feeds():
    rt = make_runtime()
    routes = [SimpleNamespace(sni=("a.example",), pool="api")]
    config = SimpleNamespace(name="sni", pool=None, routes=routes, bind=(), protocol="tls")
    rt.listeners["sni"] = SimpleNamespace(config=config, sessions=[], total=0)
    rt.pools["api"].servers[1].bytes_out = 4096
    (_, sni) = Stats(0.0, 0.0).snapshot(rt, 1.0)["listeners"]
    assert sni["pool"] == "" and sni["pools"] == ["api"]
    assert sni["bytes_out"] == 4096 and sni["bytes_source"] == "pool"


def test_snapshot_fields_and_json():
    rt = make_runtime()
    stats = Stats(10.0, 1_700_000_000.0, pid=42)
    hist = stats.connect_latency("api", "a")
    for v in (0.0004, 0.0004, 0.0004, 0.03):
        hist.observe(v)
    snap = stats.snapshot(rt, 70.0)
    json.dumps(snap, allow_nan=False)  # strict JSON: no NaN or inf anywhere
    assert snap["version"] == __version__ and snap["pid"] == 42
    assert snap["uptime"] == 60.0
    assert snap["time"] == 1_700_000_060.0
    assert snap["config"] == {
        "file": "site.toml",
        "loaded_at": 1_700_000_000.0,
        "loaded_ago": 60.0,
        "reloads": 0,
        "reload_attempts": 0,
        "reloading": False,
        "last_reload_error": "",
    }
    (web,) = snap["listeners"]
    assert web["protocol"] == "tcp"
    assert web["bind"] == ["127.0.0.1:8080", "[::1]:8080"]
    assert web["pool"] == "api" and web["refused"] == 0
    (pool,) = snap["pools"]
    assert pool["balance"] == "least_conn" and pool["health_checked"]
    a, b = pool["servers"]
    assert a["address"] == "127.0.0.1:9001" and a["weight"] == 3 and a["state"] == "up"
    assert a["connect_count"] == 4
    assert 0.00025 <= a["connect_p50"] <= 0.0005
    assert 0.025 <= a["connect_p99"] <= 0.05
    assert b["backup"] is True and b["connect_p50"] is None
    assert a["health"]["rise"] == 1


def test_server_state_changes_become_events():
    rt = make_runtime()
    stats = Stats(0.0, 0.0)
    a, b = rt.pools["api"].servers
    stats.tick(rt, 1.0)
    assert stats.events() == []
    a.on_check(False, 1.5, "tcp: Connection refused")
    b.draining = True
    stats.tick(rt, 2.0)
    kinds = {e.kind: e.text for e in stats.events()}
    assert kinds["server_down"] == "api/a up -> down (tcp: Connection refused)"
    assert kinds["server_draining"] == "api/b up -> draining"
    a.on_check(True, 2.5, "tcp: ok")
    stats.tick(rt, 3.0)
    snap = stats.snapshot(rt, 3.0)
    assert snap["events"][0]["kind"] == "server_up"  # newest first
    assert snap["events"][0]["ago"] == 0.0


def test_a_quick_drain_and_enable_leaves_events_and_moves_changed():
    """Ticks compare states a second apart, so a drain undone within a second was invisible;
    the operator's action is an event of its own, and is not reported twice."""
    rt = make_runtime()
    stats = Stats(0.0, 0.0)
    a, _ = rt.pools["api"].servers
    stats.tick(rt, 1.0)
    a.draining = True
    stats.operator(1.2, "api", a, "drain", "the admin API")
    a.draining = False
    stats.operator(1.4, "api", a, "enable", "the admin API")
    stats.tick(rt, 2.0)
    assert [(e.kind, e.text) for e in stats.events()] == [
        ("drain", "api/a up -> draining, from the admin API"),
        ("enable", "api/a draining -> up, from the admin API"),
    ]
    (server, _) = stats.snapshot(rt, 10.0)["pools"][0]["servers"]
    assert server["last_change_ago"] == pytest.approx(8.6)  # the enable, not the start


def test_state_changes_seen_by_a_tick_move_changed():
    rt = make_runtime()
    stats = Stats(0.0, 0.0)
    _, b = rt.pools["api"].servers
    stats.tick(rt, 1.0)
    b.draining = True  # e.g. set by a reload's `drain = true`
    stats.tick(rt, 2.0)
    (_, server) = stats.snapshot(rt, 5.0)["pools"][0]["servers"]
    assert server["state"] == "draining" and server["last_change_ago"] == 3.0


def test_reload_is_noticed_and_sets_loaded_at():
    rt = make_runtime()
    stats = Stats(0.0, 1000.0)
    stats.tick(rt, 1.0)
    rt.config = load_text(CONFIG, "site.toml")
    rt.reloads = 1
    stats.tick(rt, 5.0)
    (event,) = stats.events()
    assert event.kind == "reload" and "reload 1 applied from site.toml" in event.text
    assert stats.snapshot(rt, 6.0)["config"]["loaded_at"] == 1005.0


def test_event_ring_keeps_the_last_hundred():
    stats = Stats(0.0, 0.0)
    for i in range(150):
        stats.event(float(i), "config_error", f"error {i}")
    events = stats.events()
    assert len(events) == 100
    assert events[0].text == "error 50" and events[-1].text == "error 149"


def test_removed_servers_and_listeners_are_forgotten():
    rt = make_runtime()
    stats = Stats(0.0, 0.0)
    stats.connect_latency("api", "a").observe(0.001)
    stats.tick(rt, 1.0)
    rt.pools["api"].servers = rt.pools["api"].servers[1:]
    del rt.listeners["web"]
    stats.tick(rt, 2.0)
    assert dict(stats.histograms()) == {}
    snap = stats.snapshot(rt, 2.0)
    assert snap["listeners"] == []
    assert [s["name"] for s in snap["pools"][0]["servers"]] == ["b"]


def test_snapshot_of_a_bare_runtime():
    """Duck typing: an object with none of the optional attributes still gives a snapshot."""
    stats = Stats(0.0, 0.0)
    snap = stats.snapshot(SimpleNamespace(), 1.0)
    assert snap["listeners"] == [] and snap["pools"] == [] and snap["config"]["file"] == ""
