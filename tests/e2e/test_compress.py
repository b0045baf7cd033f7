"""The compression stage end to end: curl (HTTP/1.1 and HTTP/2 over TLS) against an l4lb
listener in front of a real HTTP backend; the decoded body must equal the original."""

from __future__ import annotations

import subprocess

import pytest

from tests.e2e.helpers import free_port, pool_toml

BODY_N = 5000
ORIGINAL = (b"l4lb says hello to the cache and the compressor. " * (BODY_N // 49 + 1))[:BODY_N]


def config(port: int, backend, tmp_path, protocol: str, compress: str, routes: str = "") -> str:
    text = f'[listener.web]\nbind = "127.0.0.1:{port}"\nprotocol = "{protocol}"\npool = "p"\n'
    text += f"compress = {compress}\n"
    if protocol == "https":
        text += (
            f'[[listener.web.certs]]\ncert = "{tmp_path}/site.crt"\n'
            f'key = "{tmp_path}/site.key"\nselfsigned = true\n'
        )
    return text + routes + "\n" + pool_toml("p", [f'name = "b"\naddress = "{backend.address}"'])


def curl(port: int, protocol: str, path: str, *args: str) -> tuple[dict, bytes]:
    """Headers (lower-case names; last value wins) and body of one curl request."""
    version = ["--http2", "-k"] if protocol == "https" else ["--http1.1"]
    dump = [] if "-I" in args else ["-D", "-"]  # (-I prints the head itself)
    out = subprocess.run(
        [
            "curl",
            "-s",
            "-m",
            "10",
            *dump,
            *version,
            *args,
            f"{protocol}://127.0.0.1:{port}{path}",
        ],
        capture_output=True,
        check=True,
    ).stdout
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    headers[":status"] = lines[0].split()[1]
    headers[":version"] = lines[0].split()[0]
    return headers, body


PROTOCOLS = ["http", "https"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("encoding", ["gzip", "br", "zstd"])
@pytest.mark.parametrize("chunked", [False, True])
def test_compressed_and_decoded(proxy, http_backends, tmp_path, protocol, encoding, chunked):
    (b,) = http_backends("b")
    port = free_port()
    proxy(config(port, b, tmp_path, protocol, '["zstd", "br", "gzip"]'))
    path = f'/resp?n={BODY_N}&h=etag:"v1"' + ("&chunked=1" if chunked else "")
    headers, raw = curl(port, protocol, path, "-H", f"accept-encoding: {encoding}")
    assert headers[":version"] == ("HTTP/2" if protocol == "https" else "HTTP/1.1")
    assert headers["content-encoding"] == encoding
    assert headers["vary"].lower() == "accept-encoding"
    assert headers["etag"] == 'W/"v1"'
    assert "content-length" not in headers
    assert len(raw) < BODY_N
    _, decoded = curl(port, protocol, path, "--compressed", "-H", f"accept-encoding: {encoding}")
    assert decoded == ORIGINAL


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_left_alone(proxy, http_backends, tmp_path, protocol):
    (b,) = http_backends("b")
    port = free_port()
    proxy(config(port, b, tmp_path, protocol, "true"))
    accept = ("-H", "accept-encoding: gzip, br")
    # already encoded by the server: not compressed twice
    h, body = curl(port, protocol, f"/resp?n={BODY_N}&h=content-encoding:gzip", *accept)
    assert h["content-encoding"] == "gzip" and body == ORIGINAL
    # no-transform, a type not in the list, a short body
    for path in (
        f"/resp?n={BODY_N}&h=cache-control:no-transform",
        f"/resp?n={BODY_N}&type=image/png",
        "/resp?n=100",
    ):
        h, body = curl(port, protocol, path, *accept)
        assert "content-encoding" not in h, path
        assert body == ORIGINAL[: len(body)] and len(body) in (BODY_N, 100)
    # HEAD: head only, Content-Length of the identity body
    h, body = curl(port, protocol, f"/resp?n={BODY_N}", "-I", *accept)
    assert "content-encoding" not in h and body == b""
    # 304: untouched
    h, body = curl(port, protocol, f"/resp?n={BODY_N}&h=etag:x", "-H", "if-none-match: x", *accept)
    assert h[":status"] == "304" and "content-encoding" not in h and body == b""
    # a client that accepts none gets identity, with Vary
    h, body = curl(port, protocol, f"/resp?n={BODY_N}")
    assert "content-encoding" not in h and h["vary"] == "accept-encoding" and body == ORIGINAL


def test_route_turns_it_off(proxy, http_backends, tmp_path):
    (b,) = http_backends("b")
    port = free_port()
    routes = (
        '[[listener.web.routes]]\npath_prefix = "/raw"\npool = "p"\ncompress = false\n'
        '[[listener.web.routes]]\npool = "p"\n'
    )
    proxy(config(port, b, tmp_path, "http", '["gzip"]', routes))
    accept = ("-H", "accept-encoding: gzip")
    assert "content-encoding" not in curl(port, "http", f"/raw/resp?n={BODY_N}", *accept)[0]
    assert curl(port, "http", f"/resp?n={BODY_N}", *accept)[0]["content-encoding"] == "gzip"


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("encoding", ["gzip", "br", "zstd"])
def test_decompressed_for_a_client_that_refuses_the_servers_encoding(
    proxy, http_backends, tmp_path, protocol, encoding
):
    """`decompress = true`: a server's encoded body reaches a client without that encoding
    decoded (no Content-Encoding, no Content-Length, a weak ETag, Vary), and a client that
    accepts it gets the server's bytes as they are."""
    (backend,) = http_backends("b")
    port = free_port()
    compress = '{encodings = ["gzip"], decompress = true}'
    proxy(config(port, backend, tmp_path, protocol, compress))
    path = f"/resp?n={BODY_N}&encode={encoding}&h=etag:%22v1%22"
    headers, body = curl(port, protocol, path, "-H", "Accept-Encoding: identity")
    assert headers[":status"] == "200" and body == ORIGINAL
    assert "content-encoding" not in headers and "content-length" not in headers
    assert headers["etag"] == 'W/"v1"' and "accept-encoding" in headers["vary"].lower()
    headers, raw = curl(port, protocol, path, "-H", f"Accept-Encoding: {encoding}")
    assert headers["content-encoding"] == encoding and raw != ORIGINAL and len(raw) < BODY_N


def test_not_decompressed_unless_asked(proxy, http_backends, tmp_path):
    (backend,) = http_backends("b")
    port = free_port()
    proxy(config(port, backend, tmp_path, "http", "true"))
    headers, raw = curl(port, "http", f"/resp?n={BODY_N}&encode=gzip")
    assert headers["content-encoding"] == "gzip" and raw != ORIGINAL
