"""The cache's memory store: the byte bound under churn, LRU order, the counters, and purges
by key, prefix and tag (l7/cache/store.py)."""

from __future__ import annotations

import pathlib
import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st

from l7.cache.store import Entry, MemoryStore, both_schemes


def entry(body: bytes = b"x", tags: str = "", vary: tuple = ()) -> Entry:
    headers = [(b"cache-control", b"max-age=60")]
    if tags:
        headers.append((b"surrogate-key", tags.encode()))
    return Entry(200, headers, body, vary, 0.0, 0.0, 60.0)


def consistent(store: MemoryStore) -> None:
    """The running totals agree with what is stored, and the tag index with the tags."""
    stored = [e for variants in store.entries.values() for e in variants]
    assert store.bytes == sum(e.size for e in stored)
    assert store.objects == len(stored)
    assert store.bytes <= store.max_bytes
    for key, variants in store.entries.items():
        for tag in {t for e in variants for t in e.tags}:
            assert key in store.tags[tag]
    for tag, keys in store.tags.items():
        assert keys and all(any(tag in e.tags for e in store.entries[k]) for k in keys)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 40),  # key
            st.integers(0, 3000),  # body size
            st.sampled_from(["", "a", "b", "a b"]),
            st.sampled_from([(), ((b"accept-language", b"en"),)]),
            st.sampled_from(["put", "put", "put", "purge", "prefix", "tag"]),
        ),
        max_size=150,
    )
)
def test_the_bound_and_the_books_hold_under_churn(ops):
    churn(MemoryStore(max_bytes=8192, max_object=4096), ops)
    with tempfile.TemporaryDirectory() as root:  # with a disk tier read and written through
        store = MemoryStore(max_bytes=8192, max_object=4096)
        store.attach_disk(root, 16384)
        churn(store, ops)
        assert store.disk.bytes == sum(f.stat().st_size for f in _files(root))


def _files(root: str) -> list:
    return [f for f in pathlib.Path(root).rglob("*") if f.is_file()]


def churn(store: MemoryStore, ops: list) -> None:
    for key, size, tags, vary, op in ops:
        if op == "put":
            store.put(f"http://h/{key}", entry(b"x" * size, tags, vary))
        elif op == "purge":
            store.purge(f"http://h/{key}")
        elif op == "prefix":
            store.purge_prefix(f"http://h/{key}")
        else:
            store.purge_tag(tags or "a")
        consistent(store)


def test_least_recently_used_goes_first_and_evictions_are_counted():
    one = entry(b"x" * 1000).size
    store = MemoryStore(max_bytes=3 * one, max_object=2000)
    for key in "abc":
        assert store.put(key, entry(b"x" * 1000))
    store.variants("a")  # a used: b is now the oldest
    store.put("d", entry(b"x" * 1000))
    assert list(store.entries) == ["c", "a", "d"]
    assert store.evictions == 1 and store.objects == 3 and store.bytes == 3 * one
    assert not store.put("big", entry(b"x" * 2001))  # over max_object: not stored
    assert store.stores == 4


def test_counters_per_route_and_in_total():
    store = MemoryStore(1 << 20, 1 << 16)
    static, api = store.counters("web", "static"), store.counters("web", "api")
    assert store.counters("web", "static") is static
    store.record(static, "hits")
    store.record(static, "hits")
    store.record(api, "misses")
    store.record(api, "stale")
    store.put("k", entry(), api)
    store.hits += 1  # the old spelling counts for no route
    report = store.report()
    assert (report["hits"], report["misses"], report["stale"], report["stored"]) == (3, 1, 1, 1)
    assert report["routes"] == [
        {"listener": "web", "route": "static", "hits": 2, "misses": 0, "stale": 0, "stored": 0},
        {"listener": "web", "route": "api", "hits": 0, "misses": 1, "stale": 1, "stored": 1},
    ]


def test_purge_by_key_prefix_and_tag_counts_responses():
    store = MemoryStore(1 << 20, 1 << 16)
    en, fr = ((b"accept-language", b"en"),), ((b"accept-language", b"fr"),)
    store.put("http://h/a", entry(tags="x y", vary=en))
    store.put("http://h/a", entry(tags="y", vary=fr))
    store.put("http://h/b", entry(tags="x"))
    store.put("http://h/c/1", entry())
    store.put("http://h/c/2", entry())
    assert store.purge("http://h/nothing") == 0
    assert store.purge_tag("x") == 2  # a's English variant and b; a's French one stays
    assert [e.vary for e in store.variants("http://h/a")] == [fr]
    assert "x" not in store.tags and store.tags["y"] == {"http://h/a"}
    assert store.purge_prefix("http://h/c/") == 2
    assert store.purge("http://h/a") == 1
    assert store.entries == {} and store.tags == {} and store.bytes == 0
    assert store.purged == 5
    consistent(store)


def test_a_replaced_variant_takes_its_tags_along():
    store = MemoryStore(1 << 20, 1 << 16)
    store.put("k", entry(tags="old"))
    store.put("k", entry(tags="new"))
    assert store.tags == {"new": {"k"}} and store.purge_tag("old") == 0
    consistent(store)


def test_tag_header_is_configurable_and_tags_are_bounded():
    store = MemoryStore(1 << 20, 1 << 16, tag_header=b"cache-tag")
    e = entry()
    e.headers.append((b"cache-tag", " ".join(f"t{i}" for i in range(100)).encode()))
    e.headers.append((b"surrogate-key", b"ignored"))
    store.put("k", e)
    assert len(e.tags) == 64 and "ignored" not in store.tags and store.purge_tag("t0") == 1


def test_purge_targets_become_keys():
    assert both_schemes("Example.COM/a?B=1") == [
        "http://example.com/a?B=1",
        "https://example.com/a?B=1",
    ]
    assert both_schemes("HTTPS://Example.com/P") == ["https://example.com/P"]
    assert both_schemes("example.com") == ["http://example.com", "https://example.com"]


def test_a_prefix_purge_keeps_the_disk_books():
    """Found by the churn test: a purge by prefix removed files without counting them."""
    with tempfile.TemporaryDirectory() as root:
        store = MemoryStore(max_bytes=8192, max_object=4096)
        store.attach_disk(root, 16384)
        churn(store, [(0, 0, "", (), "put"), (0, 0, "", (), "put"), (0, 0, "", (), "prefix")])
        assert store.disk.bytes == 0 == sum(f.stat().st_size for f in _files(root))
