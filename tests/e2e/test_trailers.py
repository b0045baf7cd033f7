"""Trailer sections and 1xx responses through the pipeline, for every client HTTP version:
response trailers of a chunked HTTP/1.1 server reach HTTP/1.1 (chunked), HTTP/2 and HTTP/3
clients (HEADERS after the body); request trailers reach the server in its chunked body;
fields RFC 9110 §6.5.1 forbids in a trailer section are dropped both ways; a 103 Early Hints
with its Link is relayed before the final response."""

from __future__ import annotations

import json
import socket
import ssl

import h11
import pytest

from tests.e2e.h2client import H2Client
from tests.e2e.helpers import free_port, make_cert, pool_toml

ALLOWED = {"grpc-status": "0", "x-checksum": "sha256=abc"}  # of RESPONSE_TRAILERS


@pytest.fixture
def web(proxy, http_backends, tmp_path):
    """An https listener with HTTP/2 and HTTP/3 in front of one HTTP/1.1 backend."""
    (backend,) = http_backends("a")
    cert, key = make_cert(tmp_path, "localhost")
    port = free_port()
    proxy(
        f'[listener.web]\nbind = "127.0.0.1:{port}"\nprotocol = "https"\npool = "a"\n'
        f'[[listener.web.certs]]\ncert = "{cert}"\nkey = "{key}"\n'
        "[listener.web.http]\nhttp3 = true\n" + pool_toml("a", [f'address = "{backend.address}"'])
    )
    return port, backend


def tls(port: int) -> ssl.SSLSocket:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    raw = socket.create_connection(("127.0.0.1", port), timeout=20)
    return ctx.wrap_socket(raw, server_hostname="localhost")


def h1_exchange(port: int, wire: bytes) -> tuple[list, int, dict, bytes, dict]:
    """Send `wire` in one write; read with h11: (1xx responses, status, fields, body,
    trailers)."""
    with tls(port) as s:
        s.sendall(wire)
        conn = h11.Connection(h11.CLIENT)
        conn.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))  # state only
        conn.send(h11.EndOfMessage())
        interim, status, fields, body = [], 0, {}, bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(s.recv(65536))
            elif isinstance(event, h11.InformationalResponse):
                interim.append(
                    (event.status_code, {k.decode(): v.decode() for k, v in event.headers})
                )
            elif isinstance(event, h11.Response):
                status = event.status_code
                fields = {k.decode(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                trailers = {k.decode(): v.decode() for k, v in event.headers}
                return interim, status, fields, bytes(body), trailers


def test_response_trailers_reach_an_http1_client(web):
    port, _ = web
    _, status, fields, body, trailers = h1_exchange(
        port, b"GET /trailers HTTP/1.1\r\nHost: localhost\r\n\r\n"
    )
    assert status == 200 and fields["transfer-encoding"] == "chunked"
    assert trailers == ALLOWED
    assert json.loads(body) == {"trailers": []}


def test_request_trailers_reach_the_server_and_never_its_head(web):
    """Head, body and trailers in one write: the trailer section is parsed before the
    request goes upstream, and must still travel as trailers, not as header fields (before,
    llhttp's trailer fields were appended to the request's own fields and sent in its head)."""
    port, backend = web
    wire = (
        b"POST /trailers HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\nX-Digest: abc\r\nAuthorization: Bearer smuggled\r\n\r\n"
    )
    _, status, _, body, trailers = h1_exchange(port, wire)
    assert status == 200 and trailers == ALLOWED
    assert json.loads(body) == {"trailers": [["x-digest", "abc"]]}
    names = {n.lower() for n, _ in backend.seen[-1]["headers"]}
    assert "x-digest" not in names and "authorization" not in names


def test_h2_trailers_both_ways(web):
    port, _ = web
    with H2Client(port, authority="localhost") as c:
        r = c.response(c.request("GET", "/trailers"))
        assert r.ended and r.status == 200
        assert r.trailers == ALLOWED
        # A request body without content-length goes chunked to the server, trailers last.
        sid = c.request("POST", "/trailers", end=False)
        c.send_body(sid, b"hello", end=False)
        c.conn.send_headers(sid, [(b"x-digest", b"abc"), (b"host", b"evil")], end_stream=True)
        c.flush()
        r = c.response(sid)
        assert r.ended and r.status == 200, r
        assert json.loads(r.body) == {"trailers": [["x-digest", "abc"]]}
        assert r.trailers == ALLOWED


def test_h3_trailers_both_ways(web):
    pytest.importorskip("aioquic")
    from tests.e2e.h3client import H3Client

    port, _ = web
    client = H3Client(port)
    try:
        sid = client.send("GET", "/trailers")
        client.response(sid)
        fields = client.responses[sid]["headers"]
        after = fields[fields.index((b":status", b"200")) + 1 :]  # head, then trailers
        assert (b"grpc-status", b"0") in after and (b"x-checksum", b"sha256=abc") in after
        assert (b"set-cookie", b"smuggled=1") not in after
        assert (b"content-type", b"text/evil") not in after

        assert client.h3 is not None
        sid = client.quic.get_next_available_stream_id()
        head = [
            (b":method", b"POST"),
            (b":scheme", b"https"),
            (b":authority", b"localhost"),
            (b":path", b"/trailers"),
        ]
        client.h3.send_headers(sid, head)
        client.h3.send_data(sid, b"hello", end_stream=False)
        client.h3.send_headers(sid, [(b"x-digest", b"abc")], end_stream=True)
        client.flush()
        status, _, body = client.response(sid)
        assert status == 200 and json.loads(body) == {"trailers": [["x-digest", "abc"]]}
    finally:
        client.close()


def test_early_hints_are_relayed_with_their_link(web):
    port, _ = web
    interim, status, _, _, _ = h1_exchange(
        port, b"GET /early-hints HTTP/1.1\r\nHost: localhost\r\n\r\n"
    )
    assert status == 200
    assert interim == [(103, {"link": "</style.css>; rel=preload"})]
    with H2Client(port, authority="localhost") as c:
        r = c.response(c.request("GET", "/early-hints"))
        assert r.ended and r.status == 200
        assert r.informational == [103]
        assert r.informational_fields[0]["link"] == "</style.css>; rel=preload"
