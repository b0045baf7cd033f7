"""The short path of a cache hit (l7/cache/hit.py) end to end, over HTTP/1.1 and HTTP/2 with
curl, on a route without compression (the short path's case; tests/e2e/test_cache.py runs with
compression on, so its hits take the general path). Each case is one the short path could
get wrong: the same answer as the general path, Age moving on as seconds pass, a Vary
mismatch, HEAD, and the requests it must leave to the general path (conditional, Range, a
request's own Cache-Control)."""

from __future__ import annotations

import gzip
import socket
import subprocess
import time

import pytest

from tests.e2e.helpers import free_port, pool_toml
from tests.e2e.test_cache import resp

BOTH = ["http", "https"]
N = 3000


def config(port: int, backend, tmp_path, protocol: str, compress: bool = False) -> str:
    text = f'[listener.web]\nbind = "127.0.0.1:{port}"\nprotocol = "{protocol}"\npool = "p"\n'
    if compress:
        text += "compress = true\n"
    if protocol == "https":
        text += (
            f'[[listener.web.certs]]\ncert = "{tmp_path}/site.crt"\n'
            f'key = "{tmp_path}/site.key"\nselfsigned = true\n'
        )
    text += '[[listener.web.routes]]\npool = "p"\ncache = "c"\n'
    text += '[cache.c]\nmax_bytes = "1m"\nmax_object = "8k"\n'
    return text + "\n" + pool_toml("p", [f'name = "b"\naddress = "{backend.address}"'], retries=0)


def get(port: int, protocol: str, path: str, *args: str) -> tuple[str, list, bytes]:
    """Status, fields (ordered, lower-case names) and body of one curl request."""
    version = ["--http2", "-k"] if protocol == "https" else ["--http1.1"]
    dump = [] if "-I" in args else ["-D", "-"]
    out = subprocess.run(
        ["curl", "-s", "-m", "10", *dump, *version, *args, f"{protocol}://127.0.0.1:{port}{path}"],
        capture_output=True,
        check=True,
    ).stdout
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields.append((name.strip().lower(), value.strip()))
    return lines[0].split()[1], fields, body


def value(fields: list, name: str) -> str | None:
    return next((v for n, v in fields if n == name), None)


@pytest.fixture
def site(proxy, http_backends, tmp_path):
    def start(protocol: str = "http", compress: bool = False):
        (b,) = http_backends("b")
        port = free_port()
        proxy(config(port, b, tmp_path, protocol, compress))
        return port, b

    return start


# (fields whose values move with the clock or the request: compared by shape, not value)
_MOVING = {"age", "cache-status", "x-request-id", "date"}


@pytest.mark.parametrize("protocol", BOTH)
def test_short_hit_answers_as_the_general_path(site, protocol):
    port, b = site(protocol)
    path = resp("cache-control:max-age=600", 'etag:"e1"', n=N)
    status, _, body = get(port, protocol, path)
    assert status == "200" and len(body) == N
    # `min-fresh=0` changes nothing but takes the general path (a request Cache-Control)
    for method in ([], ["-I"]):
        short = get(port, protocol, path, *method)
        general = get(port, protocol, path, *method, "-H", "cache-control: min-fresh=0")
        assert short[0] == general[0] == "200"
        assert short[2] == general[2] == (b"" if method else body[:N])
        assert [n for n, _ in short[1]] == [n for n, _ in general[1]]
        assert [f for f in short[1] if f[0] not in _MOVING] == [
            f for f in general[1] if f[0] not in _MOVING
        ]
        for fields in (short[1], general[1]):
            assert value(fields, "cache-status").startswith("l4lb; hit; ttl=")
            assert value(fields, "content-length") == str(N)
            assert value(fields, "age").isdigit()
    assert b.requests == 1


@pytest.mark.parametrize("protocol", BOTH)
def test_age_moves_on_as_seconds_pass(site, protocol):
    """Age (and the ttl beside it) is kept per whole second: a later hit shows it grown."""
    port, b = site(protocol)
    path = resp("cache-control:max-age=600", "age:100", n=200)
    get(port, protocol, path)
    _, fields, _ = get(port, protocol, path)
    first, ttl = int(value(fields, "age")), value(fields, "cache-status")
    assert first >= 100  # the origin's Age counts (RFC 9111 §4.2.3)
    assert ttl == f"l4lb; hit; ttl={600 - first - 1}" or ttl == f"l4lb; hit; ttl={600 - first}"
    deadline = time.monotonic() + 5
    later = first
    while later == first and time.monotonic() < deadline:
        time.sleep(0.2)
        _, fields, _ = get(port, protocol, path)
        later = int(value(fields, "age"))
    assert later > first
    ttl = int(value(fields, "cache-status").rpartition("=")[2])
    assert ttl in (600 - later - 1, 600 - later)
    assert b.requests == 1


def test_vary_mismatch_is_not_a_short_hit(site):
    port, b = site()
    path = resp("cache-control:max-age=600", "vary:accept-language", n=200)
    get(port, "http", path, "-H", "accept-language: en")
    _, fields, _ = get(port, "http", path, "-H", "accept-language: EN")  # normalised (§4.1)
    assert value(fields, "cache-status").startswith("l4lb; hit")
    _, fields, _ = get(port, "http", path, "-H", "accept-language: fr")
    assert value(fields, "cache-status") == "l4lb; fwd=vary-miss; stored"
    _, fields, _ = get(port, "http", path)  # no Accept-Language: another variant
    assert value(fields, "cache-status") == "l4lb; fwd=vary-miss; stored"
    assert b.requests == 3
    for lang, requests in (("fr", 3), ("en", 3)):
        _, fields, _ = get(port, "http", path, "-H", f"accept-language: {lang}")
        assert value(fields, "cache-status").startswith("l4lb; hit") and b.requests == requests


@pytest.mark.parametrize("protocol", BOTH)
def test_conditional_range_and_no_cache_take_the_general_path(site, protocol):
    port, b = site(protocol)
    path = resp("cache-control:max-age=600", 'etag:"e2"', n=N)
    _, _, body = get(port, protocol, path)
    status, fields, got = get(port, protocol, path, "-H", 'if-none-match: "e2"')
    assert status == "304" and got == b"" and value(fields, "etag") == '"e2"'
    assert value(fields, "cache-status").startswith("l4lb; hit")
    status, fields, got = get(port, protocol, path, "-H", "range: bytes=10-19")
    assert status == "206" and got == body[10:20]
    assert value(fields, "content-range") == f"bytes 10-19/{N}"
    assert b.requests == 1
    _, fields, _ = get(port, protocol, path, "-H", "cache-control: no-cache")
    assert value(fields, "cache-status").startswith("l4lb; fwd=request")
    assert b.requests == 2


def test_stale_entry_is_not_a_short_hit(site):
    port, b = site()
    path = resp("cache-control:max-age=0", 'etag:"e3"', n=200)
    get(port, "http", path)
    _, fields, _ = get(port, "http", path)
    assert value(fields, "cache-status").startswith("l4lb; fwd=stale")
    assert b.requests == 2


def test_head_hit_sends_no_body_on_a_kept_connection(site):
    """HTTP/1.1: a HEAD answered from the store is a head alone, and the connection goes on
    with the next request (a body after it would be read as the next response)."""
    port, b = site()
    path = resp("cache-control:max-age=600", n=200)
    get(port, "http", path)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for method in ("HEAD", "GET", "HEAD", "GET"):
            sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            data = b""
            while b"\r\n\r\n" not in data:
                data += sock.recv(65536)
            head, _, rest = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200") and b"cache-status: l4lb; hit" in head
            assert b"content-length: 200" in head
            while method == "GET" and len(rest) < 200:
                rest += sock.recv(65536)
            assert len(rest) == (200 if method == "GET" else 0)
    assert b.requests == 1


@pytest.mark.parametrize("protocol", BOTH)
def test_stored_compressed_copy_answers_as_the_general_path(site, protocol):
    """With compression on, a hit whose compressed copy is stored is sent from the copy by
    the short path, as the general path sends it; identity goes the general path (its Vary)."""
    port, b = site(protocol, compress=True)
    path = resp("cache-control:max-age=600", 'etag:"e4"', n=N)
    gz = ("-H", "accept-encoding: gzip")
    _, _, body = get(port, protocol, path)
    get(port, protocol, path, *gz)  # (the copy is made and stored by this first gzip hit)
    short = get(port, protocol, path, *gz)
    general = get(port, protocol, path, *gz, "-H", "cache-control: min-fresh=0")
    for _, fields, raw in (short, general):
        assert value(fields, "content-encoding") == "gzip" and gzip.decompress(raw) == body
        assert value(fields, "etag") == 'W/"e4"' and value(fields, "vary") == "accept-encoding"
        assert value(fields, "content-length") == str(len(raw))
        assert value(fields, "cache-status").startswith("l4lb; hit; ttl=")
    assert short[2] == general[2]
    assert [f for f in short[1] if f[0] not in _MOVING] == [
        f for f in general[1] if f[0] not in _MOVING
    ]
    _, fields, raw = get(port, protocol, path)  # identity: as stored, with the encoder's Vary
    assert raw == body and value(fields, "vary") == "accept-encoding"
    assert value(fields, "content-encoding") is None
    assert b.requests == 1
