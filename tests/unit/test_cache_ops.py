"""The operations side of the cache without sockets: purge requests parsed and applied
(l4lb/cachepurge.py), the supervisor's fan-out bookkeeping, the workers' cache counters
merged (l4lb/reports.py), and the cache line of the live view at 80x24."""

from __future__ import annotations

import json

import pytest
from rich.cells import cell_len

from l4lb.admin import AdminApp, Request
from l4lb.cachepurge import Fanout, Purge, PurgeError, apply_purge, parse_purge
from l4lb.reports import Carried, merge_caches
from l4lb.stats import Stats
from l4lb.tui import cache_line, render_to_text
from l7.cache.store import Entry, MemoryStore
from tests.unit.snapshots import make_runtime
from tests.unit.test_tui import SNAPSHOT


def parse(body) -> Purge:
    return parse_purge("c", json.dumps(body).encode())


def test_purge_bodies():
    assert parse({"url": "h/a", "urls": ["h/b"]}).urls == ("h/a", "h/b")
    assert parse({"prefixes": ["h/"], "tag": "t", "tags": ["u"]}) == Purge(
        "c", (), ("h/",), ("t", "u"), False
    )
    assert parse({"all": True}).all
    assert Purge.from_json(json.loads(json.dumps(parse({"tag": "t"}).json()))) == parse(
        {"tag": "t"}
    )


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"", "expected a JSON object"),
        (b"{", "the body is not JSON"),
        (b"[]", "expected a JSON object"),
        (b"{}", "nothing to purge"),
        (b'{"all": false}', "nothing to purge"),
        (b'{"all": 1}', '"all" must be true or false'),
        (b'{"urls": "h/a"}', "'urls' must be a list of strings"),
        (b'{"url": ""}', "url '': expected a non-empty string"),
        (b'{"tags": ["a", 2]}', "tag 2: expected a tag without spaces"),
        (b'{"key": "a"}', "unknown field 'key'"),
        (json.dumps({"urls": ["u"] * 1001}).encode(), "at most 1000"),
    ],
)
def test_bad_purge_bodies(body, error):
    with pytest.raises(PurgeError, match=None) as caught:
        parse_purge(None, body)
    assert error in str(caught.value)


def entry(tags: str = "") -> Entry:
    return Entry(200, [(b"surrogate-key", tags.encode())], b"x", (), 0.0, 0.0, 60.0)


def test_apply_purge_picks_the_cache_and_both_schemes():
    one, two = MemoryStore(1 << 20, 1 << 16), MemoryStore(1 << 20, 1 << 16)
    for store in (one, two):
        store.put("http://h/a", entry("t"))
        store.put("https://h/a", entry())
        store.put("https://h/b", entry())
    stores = {"one": one, "two": two}
    assert apply_purge(stores, Purge("one", urls=("H/a",))) == {"one": 2}
    assert apply_purge(stores, Purge(None, tags=("t",))) == {"one": 0, "two": 1}
    assert apply_purge(stores, Purge(None, prefixes=("https://h/",))) == {"one": 1, "two": 2}
    assert apply_purge(stores, Purge("two", all=True)) == {"two": 0}


def test_fanout_sums_the_answers_and_forgets_workers_that_exit():
    fan = Fanout(Purge("c", all=True), [0, 1, 2], ["b", "c"])
    assert fan.caches == {"c": 0} and not fan.done
    fan.answer(0, {"caches": {"c": 3}})
    fan.answer(0, {"caches": {"c": 3}})  # a repeat is ignored
    fan.gone(2)
    assert not fan.done
    fan.answer(1, {"caches": {"c": 1}})
    assert fan.done and fan.result() == {"caches": {"c": 4}, "workers": 2, "unanswered": []}
    late = Fanout(Purge(None, all=True), [0, 1], ["b", "c"])
    late.answer(1, {"caches": {"b": 1, "c": 0}})
    assert late.result() == {"caches": {"b": 1, "c": 0}, "workers": 1, "unanswered": [0]}


def cache(hits: int, stored: int, objects: int) -> dict:
    route = {"listener": "web", "route": "r", "hits": hits, "misses": 1, "stale": 0}
    return {
        "name": "c",
        "hits": hits,
        "misses": 1,
        "stale": 0,
        "stored": stored,
        "evictions": 0,
        "purged": 0,
        "objects": objects,
        "bytes": 100 * objects,
        "max_bytes": 1000,
        "routes": [{**route, "stored": stored}],
    }


def test_worker_cache_counters_sum_and_survive_an_exit():
    a, b = {"caches": [cache(5, 2, 2)]}, {"caches": [cache(1, 1, 1)]}
    (merged,) = merge_caches([a, b])
    assert (merged["hits"], merged["stored"], merged["objects"]) == (6, 3, 3)
    assert (merged["bytes"], merged["max_bytes"]) == (300, 2000)
    assert merged["routes"] == [
        {"listener": "web", "route": "r", "hits": 6, "misses": 2, "stale": 0, "stored": 3}
    ]
    carried = Carried()
    carried.fold({"snapshot": a})  # worker a exited: its counters stay, its gauges go
    (merged,) = merge_caches([b], carried)
    assert (merged["hits"], merged["stored"], merged["objects"]) == (6, 3, 1)
    assert merged["routes"][0]["hits"] == 6
    assert merge_caches([{}]) == []


def test_status_has_the_caches_of_the_runtime():
    rt = make_runtime()
    store = MemoryStore(1000, 500)
    store.record(store.counters("web", "r"), "hits")
    rt.caches = {"c": store}
    snap = Stats(0.0, 0.0).snapshot(rt, 1.0)
    assert snap["caches"][0]["name"] == "c" and snap["caches"][0]["hits"] == 1
    assert "caches" not in Stats(0.0, 0.0).snapshot(make_runtime(), 1.0)


CACHED = """\
[listener.web]
bind = "127.0.0.1:8080"
protocol = "http"
pool = "api"
[[listener.web.routes]]
pool = "api"
cache = "c"
[cache.c]
max_bytes = "1m"
[[pool.api.servers]]
name = "a"
address = "127.0.0.1:9001"
"""


def test_admin_purge_routes_without_sockets():
    rt = make_runtime(CACHED)
    asked = []
    rt.purge_cache = lambda purge: asked.append(purge) or {"caches": {"c": 2}}
    stats = Stats(0.0, 0.0)
    app = AdminApp(rt, stats, clock=lambda: 1.0)
    got = app.handle(Request("POST", "/cache/c/purge", body=b'{"tag": "t"}'))
    assert got.status == 200 and json.loads(got.body) == {"purged": 2, "caches": {"c": 2}}
    assert asked == [Purge("c", tags=("t",))]
    assert stats.events()[-1].kind == "purge" and "c: 2 removed (tag t)" in stats.events()[-1].text
    got = app.handle(Request("POST", "/cache/purge", body=b'{"all": true}'))
    assert got.status == 200 and asked[-1] == Purge(None, all=True)
    got = app.handle(Request("POST", "/cache/d/purge", body=b'{"all": true}'))
    assert got.status == 404 and json.loads(got.body)["error"] == "no cache named 'd'; caches: c"
    assert app.handle(Request("PURGE", "/cache/c/purge")).status == 405
    assert app.handle(Request("POST", "/cache/c/purge", body=b"{}")).status == 400
    assert len(asked) == 2
    plain = AdminApp(make_runtime(), stats, clock=lambda: 1.0)  # no route has a cache
    got = plain.handle(Request("POST", "/cache/purge", body=b'{"all": true}'))
    assert got.status == 404 and "no cache" in json.loads(got.body)["error"]


def test_cache_line_at_80x24():
    line = cache_line(cache(hits=120_000, stored=3, objects=2))
    assert line.startswith("cache c: 100% hit  120.0k hit 1 miss 0 stale  200B/1000B 2 obj")
    assert cache_line({"name": "c"}).startswith("cache c: - hit  0 hit 0 miss 0 stale")
    snap = {**SNAPSHOT, "caches": [{**cache(9, 1, 1), "name": f"c{i}"} for i in range(5)]}
    for width, height in ((80, 24), (60, 12), (200, 50)):
        lines = render_to_text(snap, width, height).rstrip("\n").split("\n")
        assert len(lines) <= height and all(cell_len(x) <= width for x in lines)
        shown = [x for x in lines if x.startswith("cache c")]
        assert 1 <= len(shown) <= 3 and "q quit" in lines[-1]
        if width >= 80:
            assert "90% hit  9 hit 1 miss 0 stale" in shown[0]


def test_tag_header_config():
    from l4lb.config import load_text
    from l4lb.errors import ConfigErrors

    config = load_text(CACHED, "site.toml")
    assert config.listeners[0].caches[0].tag_header == "surrogate-key"
    text = CACHED.replace('max_bytes = "1m"', 'max_bytes = "1m"\ntag_header = "Cache-Tag"')
    assert load_text(text, "site.toml").listeners[0].caches[0].tag_header == "cache-tag"
    with pytest.raises(ConfigErrors) as caught:
        load_text(CACHED.replace('max_bytes = "1m"', 'max_bytes = "1m"\ntag_header = "a b"'), "s")
    assert "cache.c.tag_header" in str(caught.value) and "is not a header name" in str(caught.value)
