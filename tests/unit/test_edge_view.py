"""The HTTP security stages in the merged view of the workers and in the live view: the
counters of each route's rate limits, WAF and JWT are summed over the workers (before, the
supervisor showed the freshest worker's alone), and one `edge` line per listener says them."""

from __future__ import annotations

from l4lb.reports import merge_reports
from l4lb.tui import edge_lines, render_to_text


def worker(time: float, denied: int, rejected: int, blocked: int, refused: int, up: int = 1):
    guard = {
        "route": "api",
        "denied": denied,
        "limits": [
            {"name": "ip", "scope": "local", "requests": 10, "rejected": rejected, "keys": 2},
            {"name": "g", "scope": "global", "requests": 5, "rejected": 1, "redis_up": up},
        ],
    }
    listener = {
        "name": "web",
        "route_guards": [guard],
        "route_wafs": [
            {"route": "api", "mode": "block", "inspected": 9, "detected": 2, "blocked": blocked}
        ],
        "route_jwt": [{"route": "api", "accepted": 7, "refused": refused}],
    }
    return {"snapshot": {"time": time, "listeners": [listener], "pools": []}}


def test_route_counters_are_summed_over_workers():
    merged = merge_reports([worker(1.0, 1, 2, 3, 4), worker(2.0, 10, 20, 30, 40, up=0)], 3.0)
    (web,) = merged["listeners"]
    (guard,) = web["route_guards"]
    assert guard["denied"] == 11
    local, glob = guard["limits"]
    assert (local["name"], local["requests"], local["rejected"], local["keys"]) == ("ip", 20, 22, 4)
    assert (glob["rejected"], glob["redis_up"]) == (2, 0)  # a state: down if any worker's is
    assert web["route_wafs"][0]["blocked"] == 33 and web["route_wafs"][0]["mode"] == "block"
    assert web["route_jwt"][0]["refused"] == 44 and web["route_jwt"][0]["accepted"] == 14


def test_edge_line_per_listener_with_stages():
    web = worker(1.0, 1, 2, 3, 4)["snapshot"]["listeners"][0]
    plain = {"name": "tcp-in"}
    assert edge_lines([web, plain]) == [
        "edge web: 1 denied  3/15 limited  waf 3 blocked 2 detected  jwt 4 refused 7 ok"
    ]


def test_edge_line_in_the_live_view_at_80x24():
    web = worker(1.0, 1, 2, 3, 4)["snapshot"]["listeners"][0]
    snapshot = {"listeners": [{**web, "protocol": "https", "binds": ["127.0.0.1:8443"]}]}
    text = render_to_text(snapshot, 80, 24)
    assert "edge web: 1 denied  3/15 limited" in text
    assert len(text.splitlines()) <= 24
