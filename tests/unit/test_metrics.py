"""Prometheus text exposition: parsed back with prometheus_client's own parser."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from l4lb import __version__
from l4lb.metrics import FAMILIES, escape_label, exposition, format_value
from l4lb.stats import Stats
from tests.unit.snapshots import make_runtime

ROOT = Path(__file__).resolve().parents[2]


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} for every sample in `text`."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def families(text: str) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(text)}


@pytest.fixture
def scraped():
    rt = make_runtime()
    stats = Stats(0.0, 0.0)
    a, b = rt.pools["api"].servers
    rt.listeners["web"].total = 7
    a.total, a.active, a.bytes_in, a.bytes_out, a.connect_failures = 5, 2, 100, 900, 1
    b.total = 2
    b.on_check(False, 1.0)  # fall = 1: down at once
    b.draining = False
    rt.reloads = 3
    for v in (0.0003, 0.0003, 0.004):
        stats.connect_latency("api", "a").observe(v)
    stats.tick(rt, 1.0)
    return exposition(stats.snapshot(rt, 12.5), stats)


def test_values_round_trip(scraped):
    m = parse(scraped)
    a = (("pool", "api"), ("server", "a"))
    b = (("pool", "api"), ("server", "b"))
    assert m[("l4lb_info", (("version", __version__),))] == 1
    assert m[("l4lb_uptime_seconds", ())] == 12.5
    assert m[("l4lb_reloads_total", ())] == 3
    assert m[("l4lb_listener_connections_total", (("listener", "web"),))] == 7
    assert m[("l4lb_listener_active_connections", (("listener", "web"),))] == 0
    assert m[("l4lb_server_connections_total", a)] == 5
    assert m[("l4lb_server_active_connections", a)] == 2
    assert m[("l4lb_server_up", a)] == 1
    assert m[("l4lb_server_up", b)] == 0
    assert m[("l4lb_server_draining", b)] == 0
    assert m[("l4lb_server_bytes_total", (("direction", "in"), *a))] == 100
    assert m[("l4lb_server_bytes_total", (("direction", "out"), *a))] == 900
    assert m[("l4lb_server_connect_failures_total", a)] == 1


def test_types_and_help(scraped):
    types = families(scraped)
    # prometheus_client names a counter family without its _total suffix.
    for name, (kind, _) in FAMILIES.items():
        assert types[name.removesuffix("_total") if kind == "counter" else name] == kind
    for name in FAMILIES:
        assert scraped.count(f"# HELP {name} ") == 1
        assert scraped.count(f"# TYPE {name} ") == 1


def test_histogram_is_cumulative_and_ends_with_count(scraped):
    m = parse(scraped)
    a = (("pool", "api"), ("server", "a"))
    buckets = sorted(
        (float(dict(labels)["le"]), v)
        for (name, labels), v in m.items()
        if name == "l4lb_server_connect_seconds_bucket" and dict(labels)["server"] == "a"
    )
    counts = [v for _, v in buckets]
    assert counts == sorted(counts)
    assert buckets[-1] == (math.inf, 3)
    assert dict(buckets)[0.0005] == 2
    assert m[("l4lb_server_connect_seconds_count", a)] == 3
    assert m[("l4lb_server_connect_seconds_sum", a)] == pytest.approx(0.0046)
    # A server with no connects yet still has its series, all zero.
    b = (("pool", "api"), ("server", "b"))
    assert m[("l4lb_server_connect_seconds_count", b)] == 0


def test_label_values_are_escaped():
    name = 'we"ird\\na\nme'
    snapshot = {
        "version": "1.0",
        "uptime": 1.0,
        "config": {"reloads": 0},
        "listeners": [{"name": name, "total": 1, "active": 0}],
        "pools": [
            {
                "name": name,
                "servers": [
                    {
                        "name": name,
                        "state": "up",
                        "total": 0,
                        "active": 0,
                        "bytes_in": 0,
                        "bytes_out": 0,
                    }
                ],
            }
        ],
    }
    text = exposition(snapshot)
    assert '"we\\"ird\\\\na\\nme"' in text
    m = parse(text)
    assert m[("l4lb_listener_connections_total", (("listener", name),))] == 1
    assert m[("l4lb_server_up", (("pool", name), ("server", name)))] == 1


def test_every_line_is_well_formed(scraped):
    sample = re.compile(r'^[a-z_:][a-z0-9_:]*(\{([a-z_]+="([^"\\\n]|\\.)*",?)*\})? \S+$')
    for line in scraped.splitlines():
        assert line.startswith("# ") or sample.match(line), line
    assert scraped.endswith("\n")


def test_format_value():
    assert format_value(3) == "3"
    assert format_value(True) == "1"
    assert format_value(0.25) == "0.25"
    assert format_value(math.inf) == "+Inf"
    assert format_value(-math.inf) == "-Inf"
    assert format_value(math.nan) == "NaN"
    assert escape_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'


def test_every_metric_is_documented():
    doc = (ROOT / "docs" / "METRICS.md").read_text()
    for name in FAMILIES:
        assert f"`{name}`" in doc, name
