"""The cache stage end to end: hits are answered without reaching the server (counted at
the backend), over HTTP/1.1 and HTTP/2."""

from __future__ import annotations

import pytest

from tests.e2e.helpers import free_port, pool_toml
from tests.e2e.test_compress import ORIGINAL, curl

BODY_N = len(ORIGINAL)


def config(port: int, backend, tmp_path, protocol: str, cache: str = "") -> str:
    text = f'[listener.web]\nbind = "127.0.0.1:{port}"\nprotocol = "{protocol}"\npool = "p"\n'
    if protocol == "https":
        text += (
            f'[[listener.web.certs]]\ncert = "{tmp_path}/site.crt"\n'
            f'key = "{tmp_path}/site.key"\nselfsigned = true\n'
        )
    text += '[[listener.web.routes]]\npool = "p"\ncache = "c"\n'
    text += '[cache.c]\nmax_bytes = "1m"\nmax_object = "8k"\n' + cache
    return text + "\n" + pool_toml("p", [f'name = "b"\naddress = "{backend.address}"'])


@pytest.mark.parametrize("protocol", ["http", "https"])
def test_hits_do_not_reach_the_server(proxy, http_backends, tmp_path, protocol):
    (b,) = http_backends("b")
    port = free_port()
    proxy(config(port, b, tmp_path, protocol))
    path = f"/resp?n={BODY_N}&h=cache-control:max-age%3D60"
    h, body = curl(port, protocol, path)
    assert body == ORIGINAL and "x-cache" not in h
    for _ in range(3):
        h, body = curl(port, protocol, path)
        assert body == ORIGINAL and h["x-cache"] == "HIT" and int(h["age"]) >= 0
    assert b.requests == 1
    # compressed on a hit too, from the stored identity body
    h, raw = curl(port, protocol, path, "--compressed", "-H", "accept-encoding: gzip")
    assert h["x-cache"] == "HIT" and raw == ORIGINAL
    assert b.requests == 1


@pytest.mark.parametrize(
    "path",
    [
        "/resp?n=100&h=cache-control:no-store",
        "/resp?n=100&h=cache-control:private,max-age%3D60",
        "/resp?n=100",  # no freshness information, heuristic off
        "/resp?n=100&h=cache-control:max-age%3D60&h=vary:*",
        "/resp?n=100&h=cache-control:max-age%3D60&h=set-cookie:a%3D1",
        "/resp?n=9000&h=cache-control:max-age%3D60",  # over max_object
        "/resp?n=9000&h=cache-control:max-age%3D60&chunked=1",
    ],
)
def test_not_stored(proxy, http_backends, tmp_path, path):
    (b,) = http_backends("b")
    port = free_port()
    proxy(config(port, b, tmp_path, "http"))
    n = int(path.split("n=")[1].split("&")[0])
    for _ in range(2):
        h, body = curl(port, "http", path)
        assert len(body) == n and "x-cache" not in h
    assert b.requests == 2


def test_vary_keeps_variants_apart_and_client_no_cache(proxy, http_backends, tmp_path):
    (b,) = http_backends("b")
    port = free_port()
    proxy(config(port, b, tmp_path, "http"))
    path = "/resp?n=100&h=cache-control:max-age%3D60&h=vary:accept-language"
    curl(port, "http", path, "-H", "accept-language: en")
    assert curl(port, "http", path, "-H", "accept-language: EN")[0]["x-cache"] == "HIT"
    assert "x-cache" not in curl(port, "http", path, "-H", "accept-language: fr")[0]
    assert b.requests == 2
    assert (
        "x-cache"
        not in curl(
            port, "http", path, "-H", "accept-language: en", "-H", "cache-control: no-cache"
        )[0]
    )
    assert b.requests == 3
