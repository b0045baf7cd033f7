"""RFC 9111 decisions with numbers for the clock."""

from __future__ import annotations

from l7.cache.policy import current_age, fresh_enough, freshness_lifetime, storable, vary_key
from l7.cache.store import Entry, MemoryStore

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


def test_freshness_lifetime_order():
    assert freshness_lifetime(h(cache_control="max-age=60, s-maxage=10")) == 10
    assert freshness_lifetime(h(cache_control="max-age=60", expires="x")) == 60
    assert freshness_lifetime(h(date=DATE.decode(), expires="Sun, 06 Nov 1994 08:50:37 GMT")) == 60
    assert freshness_lifetime(h(date=DATE.decode(), expires="0")) == 0  # invalid: stale
    assert freshness_lifetime(h(cache_control="max-age=abc")) == 0
    lm = h(date=DATE.decode(), last_modified="Sun, 06 Nov 1994 07:49:37 GMT")
    assert freshness_lifetime(lm) == 0
    assert freshness_lifetime(lm, heuristic=10) == 360


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
