"""RFC 9111 decisions with numbers for the clock."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from l7.cache.answer import answer, encoded_variant
from l7.cache.policy import (
    cache_status,
    current_age,
    fresh_enough,
    freshness_lifetime,
    not_modified,
    not_modified_fields,
    revalidation_request,
    same_validator,
    stale_allowed,
    storable,
    updated_fields,
    vary_key,
)
from l7.cache.ranges import UNSATISFIABLE, byte_range
from l7.cache.store import Entry, MemoryStore
from l7.compress import CompressConfig
from l7.model import Request

DATE = b"Sun, 06 Nov 1994 08:49:37 GMT"  # 784111777
T = 784111777.0


def h(**fields):
    return [(k.replace("_", "-").encode(), v.encode()) for k, v in fields.items()]


def test_storable_rules():
    ok = h(cache_control="max-age=60")
    assert storable("GET", 200, [], ok)
    assert not storable("POST", 200, [], ok)
    assert not storable("GET", 206, [], ok)
    assert not storable("GET", 200, [], h(cache_control="no-store, max-age=60"))
    assert not storable("GET", 200, h(cache_control="no-store"), ok)
    assert not storable("GET", 200, [], h(cache_control="private, max-age=60"))
    assert not storable("GET", 200, [], h(cache_control="max-age=60", vary="*"))
    assert not storable("GET", 200, [], h(cache_control="max-age=60", set_cookie="a=1"))
    assert storable(
        "GET", 200, [], h(cache_control="max-age=60", set_cookie="a=1"), store_set_cookie=True
    )
    assert not storable("GET", 200, [], [])  # no freshness, heuristic off
    assert not storable("GET", 200, [], h(last_modified=DATE.decode()))
    assert storable("GET", 200, [], h(last_modified=DATE.decode()), heuristic=10)
    # Authorization (§3.5): only with public, s-maxage or must-revalidate
    auth = h(authorization="Bearer x")
    assert not storable("GET", 200, auth, ok)
    assert storable("GET", 200, auth, h(cache_control="s-maxage=60"))
    assert storable("GET", 200, auth, h(cache_control="public, max-age=60"))
    # no-cache (§5.2.2.4): stored only with a validator, since every use revalidates
    assert not storable("GET", 200, [], h(cache_control="no-cache"))
    assert storable("GET", 200, [], h(cache_control="no-cache", etag='"a"'))
    assert storable("GET", 200, [], h(cache_control="no-cache", last_modified=DATE.decode()))


def test_freshness_lifetime_order():
    assert freshness_lifetime(h(cache_control="max-age=60, s-maxage=10")) == 10
    assert freshness_lifetime(h(cache_control="max-age=60", expires="x")) == 60
    assert freshness_lifetime(h(date=DATE.decode(), expires="Sun, 06 Nov 1994 08:50:37 GMT")) == 60
    assert freshness_lifetime(h(date=DATE.decode(), expires="0")) == 0  # invalid: stale
    assert freshness_lifetime(h(cache_control="max-age=abc")) == 0
    lm = h(date=DATE.decode(), last_modified="Sun, 06 Nov 1994 07:49:37 GMT")
    assert freshness_lifetime(lm) == 0
    assert freshness_lifetime(lm, heuristic=10) == 360
    assert freshness_lifetime(h(cache_control="no-cache, max-age=60")) == 0


def test_age():
    resp = h(date=DATE.decode(), age="5")
    # requested at T, received at T+1, now T+11: initial max(1, 5+1)=6, plus 10 resident
    assert current_age(resp, T, T + 1, T + 11) == 16
    assert current_age(h(date="Sun, 06 Nov 1994 08:49:27 GMT"), T, T, T) == 10  # apparent


def test_fresh_enough_and_request_directives():
    assert fresh_enough([], 60, 59)
    assert not fresh_enough([], 60, 60)
    assert not fresh_enough(h(cache_control="no-cache"), 60, 1)
    assert not fresh_enough(h(pragma="no-cache"), 60, 1)
    assert not fresh_enough(h(cache_control="max-age=5"), 60, 10)
    assert not fresh_enough(h(cache_control="min-fresh=55"), 60, 10)


def test_vary_key_normalised():
    resp = h(vary="Accept-Encoding, accept-language")
    a = vary_key(resp, h(accept_language="en, fr", accept_encoding="GZIP"))
    b = vary_key(resp, h(accept_language="en,fr", accept_encoding="gzip"))
    assert a == b
    assert a != vary_key(resp, h(accept_language="de"))


def test_store_bounded_lru():
    store = MemoryStore(max_bytes=3000, max_object=1000)
    entry = lambda n: Entry(200, [], b"x" * n, (), 0.0, 0.0, 60.0)  # noqa: E731
    assert not store.put("big", entry(1001))
    for i in range(10):
        assert store.put(f"k{i}", entry(700))
        store.variants("k0")  # k0 stays recently used
    assert store.bytes <= 3000
    assert store.variants("k0") and store.variants("k9") and not store.variants("k1")


# -- validation (RFC 9111 §4.3) ---------------------------------------------------------------


def test_revalidation_request_sends_the_stored_validators():
    stored = h(etag='"v1"', last_modified=DATE.decode())
    client = h(accept="*/*", if_none_match='"mine"', range="bytes=0-1", if_range='"v0"')
    out = dict(revalidation_request(client, stored))
    assert out == {
        b"accept": b"*/*",
        b"if-none-match": b'"v1"',
        b"if-modified-since": DATE,
    }
    assert revalidation_request(h(accept="*/*"), h(cache_control="max-age=1")) == h(accept="*/*")


def test_not_modified_rules():
    stored = h(etag='"v1"', last_modified=DATE.decode(), date=DATE.decode())
    assert not_modified(h(if_none_match='"v1"'), stored)
    assert not_modified(h(if_none_match='"x", W/"v1"'), stored)  # weak comparison
    assert not_modified(h(if_none_match="*"), stored)
    assert not not_modified(h(if_none_match='"v2"'), stored)
    # If-None-Match decides alone, even when If-Modified-Since would match (RFC 9110 §13.2.2)
    assert not not_modified(h(if_none_match='"v2"', if_modified_since=DATE.decode()), stored)
    assert not_modified(h(if_modified_since=DATE.decode()), stored)
    assert not_modified(h(if_modified_since="Sun, 06 Nov 1994 09:00:00 GMT"), stored)
    assert not not_modified(h(if_modified_since="Sun, 06 Nov 1994 08:00:00 GMT"), stored)
    assert not not_modified(h(if_modified_since="yesterday"), stored)  # invalid: ignored
    assert not_modified(h(if_modified_since=DATE.decode()), h(date=DATE.decode()))  # Date
    assert not not_modified([], stored)


def test_304_updates_the_stored_fields_but_not_the_framing():
    stored = h(content_length="5", etag='"v1"', cache_control="max-age=1", x_a="old")
    fresh = h(cache_control="max-age=60", content_length="0", x_a="new", x_b="added")
    out = dict(updated_fields(stored, fresh))
    assert out[b"cache-control"] == b"max-age=60" and out[b"x-a"] == b"new"
    assert out[b"x-b"] == b"added" and out[b"content-length"] == b"5"
    assert out[b"etag"] == b'"v1"'
    assert freshness_lifetime(updated_fields(stored, fresh)) == 60
    assert same_validator(stored, h(etag='"v1"')) and same_validator(stored, [])
    assert not same_validator(stored, h(etag='"v2"'))
    assert dict(not_modified_fields(stored + h(content_type="text/plain"))).keys() == {
        b"etag",
        b"cache-control",
    }


# -- serving stale (RFC 5861), with a fake clock ----------------------------------------------


def test_stale_windows_and_what_forbids_them():
    swr = h(cache_control="max-age=10, stale-while-revalidate=30")
    assert stale_allowed(swr, [], 30, "stale-while-revalidate")
    assert not stale_allowed(swr, [], 31, "stale-while-revalidate")
    assert not stale_allowed(swr, [], 1, "stale-if-error")
    sie = h(cache_control="max-age=10, stale-if-error=60")
    assert stale_allowed(sie, [], 60, "stale-if-error")
    assert stale_allowed(
        h(cache_control="max-age=10"), h(cache_control="stale-if-error=5"), 5, "stale-if-error"
    )
    for forbid in ("must-revalidate", "proxy-revalidate", "no-cache"):
        cc = f"max-age=10, {forbid}, stale-while-revalidate=30, stale-if-error=30"
        assert not stale_allowed(h(cache_control=cc), [], 1, "stale-while-revalidate")
        assert not stale_allowed(h(cache_control=cc), [], 1, "stale-if-error")
    # s-maxage beside an explicit stale directive: honoured (see the docstring)
    assert stale_allowed(
        h(cache_control="s-maxage=1, stale-while-revalidate=59"), [], 5, "stale-while-revalidate"
    )
    # the clock: a response received at T with max-age=10 is stale by 5 at T+15
    entry = h(date=DATE.decode(), cache_control="max-age=10, stale-while-revalidate=30")
    staleness = current_age(entry, T, T, T + 15) - freshness_lifetime(entry)
    assert staleness == 5 and stale_allowed(entry, [], staleness, "stale-while-revalidate")
    staleness = current_age(entry, T, T, T + 41) - freshness_lifetime(entry)
    assert not stale_allowed(entry, [], staleness, "stale-while-revalidate")


def test_cache_status_fields():
    assert cache_status(hit=True, ttl=59.7) == b"l4lb; hit; ttl=59"
    assert cache_status(hit=True, ttl=-0.2) == b"l4lb; hit; ttl=-1"
    assert cache_status(fwd="uri-miss", stored=True) == b"l4lb; fwd=uri-miss; stored"
    assert (
        cache_status(fwd="stale", fwd_status=304, ttl=60)
        == b"l4lb; fwd=stale; fwd-status=304; ttl=60"
    )
    assert cache_status(fwd="miss", collapsed=True) == b"l4lb; fwd=miss; collapsed"


# -- ranges (RFC 9110 §14) --------------------------------------------------------------------


def test_byte_ranges():
    def r(value, size=100, **more):
        return byte_range(h(range=value, **more), h(etag='"v1"', last_modified=DATE.decode()), size)

    assert r("bytes=0-9") == (0, 9)
    assert r("bytes=90-200") == (90, 99)
    assert r("bytes=95-") == (95, 99)
    assert r("bytes=-10") == (90, 99)
    assert r("bytes=-500") == (0, 99)
    assert r("bytes=100-") == UNSATISFIABLE
    assert r("bytes=-0") == UNSATISFIABLE
    assert r("bytes=0-1,5-6") is None  # several: the whole body
    assert r("bytes=9-1") is None and r("bytes=a-b") is None and r("items=0-1") is None
    assert r("bytes=0-9", if_range='"v1"') == (0, 9)
    assert r("bytes=0-9", if_range='"v0"') is None
    assert r("bytes=0-9", if_range=DATE.decode()) == (0, 9)
    assert byte_range([], [], 100) is None


def test_answers_from_a_stored_response():
    body = bytes(range(100))
    entry = Entry(
        200, h(etag='"v1"', content_length="100", date=DATE.decode()), body, (), T, T, 60.0
    )
    made, out = answer(entry, [], "GET", T + 5, b"l4lb; hit")
    assert made.status == 200 and out == body and made.length == b"100"
    assert dict(made.fields())[b"age"] == b"5"
    made, out = answer(entry, h(if_none_match='"v1"'), "GET", T, b"s")
    assert made.status == 304 and out == b"" and b"content-length" not in dict(made.fields())
    made, out = answer(entry, h(range="bytes=10-19"), "GET", T, b"s")
    fields = dict(made.fields())
    assert made.status == 206 and out == body[10:20] and fields[b"content-length"] == b"10"
    assert fields[b"content-range"] == b"bytes 10-19/100"
    made, out = answer(entry, h(range="bytes=200-"), "GET", T, b"s")
    assert made.status == 416 and dict(made.fields())[b"content-range"] == b"bytes */100"
    made, out = answer(entry, h(range="bytes=10-19"), "HEAD", T, b"s")
    assert made.status == 200 and made.length == b"100"


def test_compressed_variant_is_made_once_and_stored():
    store = MemoryStore(max_bytes=1 << 20, max_object=1 << 19)
    body = b"hello cache " * 200
    entry = Entry(200, h(content_type="text/plain", etag='"v1"'), body, (), T, T, 60.0)
    store.put("k", entry)
    config = CompressConfig(encodings=("gzip",))
    request = Request("GET", "/", h(accept_encoding="gzip"))
    first = encoded_variant(store, "k", entry, config, request)
    assert first is not None and store.stores == 2
    fields = dict(first[0])
    assert fields[b"content-encoding"] == b"gzip" and fields[b"etag"] == b'W/"v1"'
    again = encoded_variant(store, "k", entry, config, request)
    assert again is not None and again[1] is first[1] and store.stores == 2  # not recompressed
    newer = Entry(200, entry.headers, body, (), T + 1, T + 1, 60.0)  # replaced or updated
    assert encoded_variant(store, "k", newer, config, request)[1] is not first[1]
    assert encoded_variant(store, "k", entry, config, Request("GET", "/", [])) is None
    ranged = Request("GET", "/", h(accept_encoding="gzip", range="bytes=0-1"))
    assert encoded_variant(store, "k", entry, config, ranged) is None


@given(st.binary(max_size=40), st.integers(0, 10_000))
def test_byte_range_never_fails_on_untrusted_bytes(value, size):
    got = byte_range([(b"range", value)], [], size)
    assert got is None or got == UNSATISFIABLE or 0 <= got[0] <= got[1] < size


@given(st.from_regex(rb"\Abytes=[0-9]{0,4}-[0-9]{0,4}\Z"), st.integers(0, 10_000))
def test_byte_range_within_the_body(value, size):
    got = byte_range([(b"range", value)], [], size)
    assert got is None or got == UNSATISFIABLE or 0 <= got[0] <= got[1] < size
