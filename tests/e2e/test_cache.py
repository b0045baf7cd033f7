"""The cache stage end to end: curl over HTTP/1.1 and HTTP/2 (and an aioquic client over
HTTP/3) against l4lb in front of a real HTTP/1.1 origin that counts its requests. Each RFC
9111 rule is its own case; `max-age=0` makes a stored response stale at once, so nothing
here waits for time to pass."""

from __future__ import annotations

import gzip
import threading
from urllib.parse import quote

import pytest

from tests.e2e.helpers import free_port, pool_toml, wait_until
from tests.e2e.test_compress import ORIGINAL, curl

BODY_N = len(ORIGINAL)
BOTH = ["http", "https"]  # curl --http1.1 in clear, curl --http2 over TLS


def config(port: int, backend, tmp_path, protocol: str, cache: str = "", http3=False) -> str:
    text = f'[listener.web]\nbind = "127.0.0.1:{port}"\nprotocol = "{protocol}"\npool = "p"\n'
    text += "compress = true\n"
    if protocol == "https":
        text += (
            f'[[listener.web.certs]]\ncert = "{tmp_path}/site.crt"\n'
            f'key = "{tmp_path}/site.key"\nselfsigned = true\n'
        )
    if http3:
        text += "[listener.web.http]\nhttp3 = true\n"
    text += '[[listener.web.routes]]\npool = "p"\ncache = "c"\n'
    text += '[cache.c]\nmax_bytes = "1m"\nmax_object = "8k"\n' + cache
    return text + "\n" + pool_toml("p", [f'name = "b"\naddress = "{backend.address}"'], retries=0)


def resp(*fields: str, n: int = BODY_N) -> str:
    """A /resp path whose response carries these fields (`name:value`, `=` as %3D)."""
    return f"/resp?n={n}" + "".join("&h=" + quote(f, safe=':/",') for f in fields)


def status(h: dict) -> str:
    return h.get("cache-status", "")


def sent(b, name: str) -> str | None:
    """The value of `name` in the last request the origin saw."""
    return next((v for k, v in b.seen[-1]["headers"] if k.lower() == name), None)


@pytest.fixture
def site(proxy, http_backends, tmp_path):
    def start(protocol: str = "http", cache: str = ""):
        (b,) = http_backends("b")
        port = free_port()
        proxy(config(port, b, tmp_path, protocol, cache))
        return port, b

    return start


@pytest.mark.parametrize("protocol", BOTH)
def test_hits_do_not_reach_the_server(site, protocol):
    port, b = site(protocol)
    path = resp("cache-control:max-age=60")
    h, body = curl(port, protocol, path)
    assert body == ORIGINAL and status(h) == "l4lb; fwd=uri-miss; stored"
    for _ in range(3):
        h, body = curl(port, protocol, path)
        assert body == ORIGINAL and int(h["age"]) >= 0 and "x-cache" not in h
        assert status(h).startswith("l4lb; hit; ttl=")
        assert int(h["content-length"]) == BODY_N
    h, body = curl(port, protocol, path, "-I")  # HEAD: the head of the stored GET
    assert h[":status"] == "200" and body == b"" and int(h["content-length"]) == BODY_N
    assert "hit" in status(h)
    assert b.requests == 1
    # compressed on a hit too, from a variant compressed once and stored
    for _ in range(2):
        h, raw = curl(port, protocol, path, "-H", "accept-encoding: gzip")
        assert h["content-encoding"] == "gzip" and gzip.decompress(raw) == ORIGINAL
        assert int(h["content-length"]) == len(raw) and "hit" in status(h)
    assert b.requests == 1


@pytest.mark.parametrize(
    "path",
    [
        resp("cache-control:no-store", n=100),
        resp("cache-control:private,max-age=60", n=100),
        resp(n=100),  # no freshness information, heuristic off
        resp("cache-control:max-age=60", "vary:*", n=100),
        resp("cache-control:max-age=60", "set-cookie:a=1", n=100),
        resp("cache-control:max-age=60", n=9000),  # over max_object
        resp("cache-control:max-age=60", n=9000) + "&chunked=1",
        resp("cache-control:no-cache", n=100),  # no validator: revalidating needs one
    ],
)
def test_not_stored(site, path):
    port, b = site()
    n = int(path.split("n=")[1].split("&")[0])
    for _ in range(2):
        h, body = curl(port, "http", path)
        assert len(body) == n and status(h) == "l4lb; fwd=uri-miss"
    assert b.requests == 2


def test_vary_keeps_variants_apart_and_client_no_cache(site):
    port, b = site()
    path = resp("cache-control:max-age=60", "vary:accept-language", n=100)
    curl(port, "http", path, "-H", "accept-language: en")
    assert "hit" in status(curl(port, "http", path, "-H", "accept-language: EN")[0])
    h = curl(port, "http", path, "-H", "accept-language: fr")[0]
    assert status(h) == "l4lb; fwd=vary-miss; stored"
    assert b.requests == 2
    h = curl(port, "http", path, "-H", "accept-language: en", "-H", "cache-control: no-cache")[0]
    assert status(h).startswith("l4lb; fwd=request")
    assert b.requests == 3


@pytest.mark.parametrize("protocol", BOTH)
@pytest.mark.parametrize(
    ("validator", "sent_as"),
    [
        ('etag:"v1"', "if-none-match"),
        ("last-modified:Sun, 06 Nov 1994 08:49:37 GMT", "if-modified-since"),
    ],
)
def test_stale_revalidated_and_updated_by_304(site, protocol, validator, sent_as):
    port, b = site(protocol)
    path = resp("cache-control:max-age=0", validator)
    h, body = curl(port, protocol, path)
    assert body == ORIGINAL and h["x-seq"] == "1" and "stored" in status(h)
    h, body = curl(port, protocol, path)
    assert sent(b, sent_as) == validator.split(":", 1)[1]
    assert h[":status"] == "200" and body == ORIGINAL and int(h["content-length"]) == BODY_N
    assert status(h).startswith("l4lb; fwd=stale; fwd-status=304")
    assert h["x-seq"] == "2"  # the stored fields were updated from the 304 (§4.3.4)
    assert b.requests == 2


def test_a_200_on_revalidation_replaces_the_stored_response(site):
    port, b = site()
    path = resp("cache-control:max-age=0", 'etag:"v1"')
    curl(port, "http", path)
    b.no304 = True
    h, body = curl(port, "http", path)
    assert body == ORIGINAL and status(h) == "l4lb; fwd=stale; fwd-status=200; stored"
    b.no304 = False
    h, _ = curl(port, "http", path)
    assert h["x-seq"] == "3" and "fwd-status=304" in status(h)


def test_no_cache_response_is_revalidated_on_every_use(site):
    port, b = site()
    path = resp("cache-control:no-cache", 'etag:"v1"', n=100)
    assert "stored" in status(curl(port, "http", path)[0])
    for _ in range(2):
        h, body = curl(port, "http", path)
        assert len(body) == 100 and "fwd-status=304" in status(h)
        assert sent(b, "if-none-match") == '"v1"'
    assert b.requests == 3


@pytest.mark.parametrize("protocol", BOTH)
def test_client_conditionals_answered_from_the_store(site, protocol):
    port, b = site(protocol)
    lm = "Sun, 06 Nov 1994 08:49:37 GMT"
    path = resp("cache-control:max-age=60", 'etag:"v1"', f"last-modified:{lm}")
    curl(port, protocol, path)
    h, body = curl(port, protocol, path, "-H", 'if-none-match: "x", W/"v1"')
    assert h[":status"] == "304" and body == b"" and h["etag"] == '"v1"' and "hit" in status(h)
    h, body = curl(port, protocol, path, "-H", f"if-modified-since: {lm}")
    assert h[":status"] == "304" and body == b""
    h, body = curl(port, protocol, path, "-H", 'if-none-match: "v2"')
    assert h[":status"] == "200" and body == ORIGINAL
    h, _ = curl(port, protocol, path, "-H", "if-modified-since: Sat, 05 Nov 1994 08:49:37 GMT")
    assert h[":status"] == "200"
    assert b.requests == 1


@pytest.mark.parametrize("protocol", BOTH)
def test_conditional_miss_fills_the_store(site, protocol):
    """A client's conditional on a miss is not passed on: the whole response is fetched and
    stored, and the client gets its 304."""
    port, b = site(protocol)
    path = resp("cache-control:max-age=60", 'etag:"v1"')
    h, body = curl(port, protocol, path, "-H", 'if-none-match: "v1"')
    assert h[":status"] == "304" and body == b"" and status(h) == "l4lb; fwd=uri-miss; stored"
    assert sent(b, "if-none-match") is None
    h, body = curl(port, protocol, path)
    assert h[":status"] == "200" and body == ORIGINAL and "hit" in status(h)
    h, body = curl(port, protocol, path + "&x=1", "-H", 'if-none-match: "v0"')
    assert h[":status"] == "200" and body == ORIGINAL
    assert b.requests == 2


@pytest.mark.parametrize("protocol", BOTH)
def test_ranges_from_the_store(site, protocol):
    port, b = site(protocol)
    path = resp("cache-control:max-age=60", 'etag:"v1"')
    curl(port, protocol, path)
    gz = ["-H", "accept-encoding: gzip"]
    h, body = curl(port, protocol, path, "-H", "range: bytes=10-99", *gz)
    assert h[":status"] == "206" and body == ORIGINAL[10:100]
    assert h["content-range"] == f"bytes 10-99/{BODY_N}" and "content-encoding" not in h
    h, body = curl(port, protocol, path, "-H", "range: bytes=-7")
    assert h[":status"] == "206" and body == ORIGINAL[-7:]
    h, body = curl(port, protocol, path, "-H", f"range: bytes={BODY_N}-")
    assert h[":status"] == "416" and h["content-range"] == f"bytes */{BODY_N}"
    h, body = curl(port, protocol, path, "-H", "range: bytes=0-1,5-6")
    assert h[":status"] == "200" and body == ORIGINAL  # several ranges: the whole body
    h, body = curl(port, protocol, path, "-H", "range: bytes=0-1", "-H", 'if-range: "v0"')
    assert h[":status"] == "200" and body == ORIGINAL
    assert b.requests == 1


@pytest.mark.parametrize("protocol", BOTH)
def test_stale_while_revalidate_one_background_refresh(site, protocol):
    port, b = site(protocol)
    path = resp("cache-control:max-age=0, stale-while-revalidate=60", 'etag:"v1"')
    curl(port, protocol, path)
    b.gate = threading.Event()  # the refresh waits at the origin while the test asks again
    try:
        for _ in range(5):
            h, body = curl(port, protocol, path)
            assert body == ORIGINAL and status(h).startswith("l4lb; hit; ttl=-")
        assert wait_until(lambda: b.requests == 2)
        assert sent(b, "if-none-match") == '"v1"'
    finally:
        b.gate.set()
    assert b.requests == 2  # exactly one refresh


@pytest.mark.parametrize("protocol", BOTH)
def test_stale_if_error(site, protocol):
    port, b = site(protocol)
    path = resp("cache-control:max-age=0, stale-if-error=60")
    curl(port, protocol, path)
    b.fail = 503
    h, body = curl(port, protocol, path)
    assert h[":status"] == "200" and body == ORIGINAL
    assert status(h).startswith("l4lb; fwd=stale; fwd-status=503; ttl=-")
    b.fail, b.drop = 0, True  # the server cannot be reached
    h, body = curl(port, protocol, path)
    assert h[":status"] == "200" and body == ORIGINAL and "detail=unreachable" in status(h)


@pytest.mark.parametrize(
    "directives", ["max-age=0", "max-age=0, must-revalidate, stale-if-error=60", "no-cache"]
)
def test_no_stale_on_error_without_permission(site, directives):
    port, b = site()
    path = resp(f"cache-control:{directives}", 'etag:"v1"')
    curl(port, "http", path)
    b.fail = 503
    h, body = curl(port, "http", path)
    assert h[":status"] == "503" and body == b"failed\n"


def test_collapsed_misses_http2(site):
    from tests.e2e.h2client import H2Client

    port, b = site("https")
    path = resp("cache-control:max-age=60")
    b.gate = threading.Event()
    try:
        with H2Client(port, authority=f"127.0.0.1:{port}") as client:
            ids = [client.request("GET", path) for _ in range(100)]
            client.ping()  # its ACK comes after every request before it was read
            assert client.wait(
                lambda: any(type(e).__name__ == "PingAckReceived" for e in client.events)
            )
            assert wait_until(lambda: b.requests >= 1)
            b.gate.set()
            answers = [client.response(i) for i in ids]
    finally:
        b.gate.set()
    assert all(a.status == 200 and a.body == ORIGINAL for a in answers)
    assert sum("collapsed" in a.headers["cache-status"] for a in answers) == 99
    assert b.requests == 1
    h, body = curl(port, "https", path)
    assert body == ORIGINAL and "hit" in status(h)


def test_waiters_are_streamed_the_body_as_it_arrives(site):
    """Two requests wait for one fetch; a third joins while the body is still arriving: all
    three get the first 1000 bytes while the origin holds the rest back."""
    from tests.e2e.h2client import H2Client

    port, b = site("https")
    path = resp("cache-control:max-age=60")
    b.gate, b.mid = threading.Event(), threading.Event()
    try:
        with H2Client(port, authority=f"127.0.0.1:{port}") as client:
            first, second = client.request("GET", path), client.request("GET", path)
            client.ping()
            assert client.wait(
                lambda: any(type(e).__name__ == "PingAckReceived" for e in client.events)
            )
            assert wait_until(lambda: b.requests >= 1)
            b.gate.set()
            streams = client.streams
            assert client.wait(
                lambda: len(streams[first].body) == len(streams[second].body) == 1000
            )
            third = client.request("GET", path)
            assert client.wait(lambda: len(streams[third].body) == 1000)
            assert not any(streams[i].ended for i in (first, second, third))
            b.mid.set()
            answers = [client.response(i) for i in (first, second, third)]
    finally:
        b.gate.set()
        b.mid.set()
    assert all(a.status == 200 and a.body == ORIGINAL for a in answers)
    assert [("collapsed" in a.headers["cache-status"]) for a in answers] == [False, True, True]
    assert b.requests == 1
    h, body = curl(port, "https", path)
    assert body == ORIGINAL and "hit" in status(h)


def test_waiters_go_on_their_own_when_the_answer_is_not_stored(site):
    from tests.e2e.h2client import H2Client

    port, b = site("https")
    path = resp("cache-control:private, max-age=60", n=100)
    b.gate = threading.Event()
    try:
        with H2Client(port, authority=f"127.0.0.1:{port}") as client:
            ids = [client.request("GET", path) for _ in range(3)]
            client.ping()
            assert client.wait(
                lambda: any(type(e).__name__ == "PingAckReceived" for e in client.events)
            )
            assert wait_until(lambda: b.requests >= 1)
            assert b.requests == 1  # the other two wait
            b.gate.set()
            answers = [client.response(i) for i in ids]
    finally:
        b.gate.set()
    assert all(a.status == 200 and len(a.body) == 100 for a in answers)
    assert b.requests == 3


def test_collapsed_misses_http1(site):
    port, b = site("http", "collapse_timeout = 30\n")
    path = resp("cache-control:max-age=60")
    b.gate = threading.Event()
    results: list = []

    def get() -> None:
        results.append(curl(port, "http", path))

    threads = [threading.Thread(target=get) for _ in range(30)]
    try:
        for t in threads:
            t.start()
        assert wait_until(lambda: b.requests >= 1)
    finally:
        b.gate.set()
    for t in threads:
        t.join(20)
    assert len(results) == 30 and all(body == ORIGINAL for _, body in results)
    assert b.requests == 1


def test_collapse_timeout_sends_waiters_on(site):
    """A waiter whose wait runs out goes to the server itself (and does not store)."""
    port, b = site("http", "collapse_timeout = 0.2\n")
    path = resp("cache-control:max-age=60")
    b.gate = threading.Event()
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(curl(port, "http", path)))]
    try:
        threads[0].start()
        assert wait_until(lambda: b.requests == 1)
        threads.append(threading.Thread(target=lambda: results.append(curl(port, "http", path))))
        threads[1].start()
        assert wait_until(lambda: b.requests == 2)  # while the first fetch is still held
    finally:
        b.gate.set()
    for t in threads:
        t.join(20)
    assert sorted(status(h) for h, _ in results) == [
        "l4lb; fwd=uri-miss",
        "l4lb; fwd=uri-miss; stored",
    ]
    assert all(body == ORIGINAL for _, body in results)


def test_unsafe_methods_invalidate(site):
    port, b = site()
    path = resp("cache-control:max-age=60", n=100)
    other = resp("cache-control:max-age=60", n=50)
    for p in (path, other):
        curl(port, "http", p)
    assert "hit" in status(curl(port, "http", path)[0])
    curl(port, "http", path, "-X", "POST", "-d", "x")
    assert status(curl(port, "http", path)[0]) == "l4lb; fwd=uri-miss; stored"
    # Location on the same authority is invalidated too, another authority's is not
    loc = other
    curl(port, "http", resp(f"location:http://example.org{loc}"), "-X", "DELETE")
    assert "hit" in status(curl(port, "http", other)[0])
    curl(port, "http", resp(f"location:{loc}"), "-X", "PUT", "-d", "x")
    assert "uri-miss" in status(curl(port, "http", other)[0])
    # a failed unsafe request invalidates nothing
    assert "hit" in status(curl(port, "http", path)[0])
    curl(port, "http", path + "&status=500", "-X", "POST", "-d", "x")
    assert "hit" in status(curl(port, "http", path)[0])
    assert b.requests == 8


def test_http3_hit_and_revalidation(proxy, http_backends, tmp_path):
    pytest.importorskip("aioquic")
    from tests.e2e.h3client import H3Client
    from tests.e2e.helpers import make_cert

    (b,) = http_backends("b")
    port = free_port()
    cert, key = make_cert(tmp_path, "localhost")
    text = config(port, b, tmp_path, "https", http3=True)
    text = text.replace(f"{tmp_path}/site.crt", str(cert)).replace(f"{tmp_path}/site.key", str(key))
    text = text.replace("selfsigned = true\n", "")
    proxy(text)
    client = H3Client(port)
    try:
        path = resp("cache-control:max-age=60")
        code, h, body = client.request("GET", path)
        assert code == 200 and body == ORIGINAL and "stored" in h["cache-status"]
        code, h, body = client.request("GET", path)
        assert body == ORIGINAL and "hit" in h["cache-status"]
        stale = resp("cache-control:max-age=0", 'etag:"v1"')
        client.request("GET", stale)
        code, h, body = client.request("GET", stale)
        assert code == 200 and body == ORIGINAL and "fwd-status=304" in h["cache-status"]
    finally:
        client.close()
    assert b.requests == 3
