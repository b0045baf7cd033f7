"""HTTP/2 end to end: the L7 behaviours over an `https` listener (with `http3 = true`) for
HTTP/1.1, HTTP/2 and HTTP/3 clients alike (the `ask` fixture's parameter; HTTP/3 through the
aioquic client of tests/e2e/h3client.py over UDP on the same port), h2c with prior knowledge,
and each HTTP/2 defence sent by a raw h2 client (tests/e2e/h2client.py), with another
connection served meanwhile and afterwards."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.request

import h2.events
import h11
import pytest

from tests.e2e.h2client import H2Client
from tests.e2e.h3client import H3Client
from tests.e2e.helpers import free_port, make_cert, pool_toml, wait_until
from tests.e2e.httpbackend import HttpBackend
from tests.e2e.test_http import ROUTES as HTTP_ROUTES

CALM, PROTOCOL_ERROR, REFUSED, NO_ERROR, COMPRESSION = 11, 1, 7, 0, 9


@pytest.fixture(scope="module")
def cert(tmp_path_factory) -> tuple[str, str]:
    return make_cert(tmp_path_factory.mktemp("h2certs"), "example.com")


def https(port: int, cert, pool: str | None = "p", http: str = "", routes: str = "") -> str:
    """An https listener named web, with HTTP/3 on (UDP on the same port); `http` is the rest
    of its [listener.web.http] table."""
    text = f'[listener.web]\nbind = "127.0.0.1:{port}"\nprotocol = "https"\n'
    if pool:
        text += f'pool = "{pool}"\n'
    text += f'[[listener.web.certs]]\ncert = "{cert[0]}"\nkey = "{cert[1]}"\n'
    text += "[listener.web.http]\nhttp3 = true\n" + http
    return text + "\n" + routes


def servers(*backends: HttpBackend) -> list[str]:
    return [f'name = "{b.name}"\naddress = "{b.address}"' for b in backends]


def h1_ask(port, method, path, headers, body, authority) -> tuple[int, dict, bytes]:
    """One HTTP/1.1 request over TLS (ALPN http/1.1), read with h11."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    raw = socket.create_connection(("127.0.0.1", port), timeout=30)
    with raw, ctx.wrap_socket(raw, server_hostname="example.com") as s:
        assert s.selected_alpn_protocol() == "http/1.1"
        conn = h11.Connection(h11.CLIENT)
        fields = [("host", authority), *headers]
        if body is not None:
            fields.append(("content-length", str(len(body))))
        s.sendall(conn.send(h11.Request(method=method, target=path, headers=fields)))
        if body:
            for i in range(0, len(body), 1 << 20):
                s.sendall(conn.send(h11.Data(data=body[i : i + (1 << 20)])))
        s.sendall(conn.send(h11.EndOfMessage()))
        status, got, out = 0, {}, bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(s.recv(1 << 20))
            elif isinstance(event, h11.Response):
                status = event.status_code
                got = {k.decode(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                out += event.data
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return status, got, bytes(out)


def h2_ask(port, method, path, headers, body, authority) -> tuple[int, dict, bytes]:
    """One HTTP/2 request on a new connection (ALPN h2)."""
    with H2Client(port, authority=authority, timeout=30) as c:
        fields = list(headers)
        if body is not None:
            fields.append(("content-length", str(len(body))))
        r = c.response(c.request(method, path, fields, body or None, end=True))
        assert r.ended, (r, c.goaway)
        return r.status, r.headers, r.body


def h3_ask(port, method, path, headers, body, authority) -> tuple[int, dict, bytes]:
    """One HTTP/3 request on a new QUIC connection (aioquic, UDP on the listener's port)."""
    fields = [(n.lower().encode(), v.encode()) for n, v in headers]
    if body is not None:
        fields.append((b"content-length", str(len(body)).encode()))
    client = H3Client(port, server_name="example.com")
    try:
        sid = client.send(method, path, authority=authority, headers=fields, body=body or b"")
        return client.response(sid, timeout=60)
    finally:
        client.close()


@pytest.fixture(params=["h1", "h2", "h3"])
def ask(request):
    """`ask(port, path, headers=[], method="GET", body=None, authority="example.com")` ->
    (status, headers, body), over the client protocol of this run."""
    impl = {"h1": h1_ask, "h2": h2_ask, "h3": h3_ask}[request.param]

    def call(port, path, headers=(), method="GET", body=None, authority="example.com"):
        return impl(port, method, path, list(headers), body, authority)

    call.version = request.param  # type: ignore[attr-defined]
    return call


# test_http.py's routes, with a redirect that keeps the request's scheme.
ROUTES = HTTP_ROUTES.replace('to = "https://{host}', 'to = "{scheme}://{host}')


# -- the L7 behaviours, over HTTP/1.1, HTTP/2 and HTTP/3 ----------------------------------------


def test_routing_rewrite_redirect_respond(ask, cert, proxy, http_backends):
    a, b = http_backends("a", "b")
    port = free_port()
    proxy(
        https(port, cert, pool=None, routes=ROUTES)
        + pool_toml("a", servers(a))
        + pool_toml("b", servers(b))
    )
    status, headers, body = ask(port, "/v1/users?x=1", authority="api.example.com")
    assert (status, body, headers["x-route"]) == (200, b"b\n", "api")
    assert b.seen[-1]["target"] == "/users?x=1"  # prefix stripped, query kept
    assert ask(port, "/v1/users", authority="eu.api.example.com:8443")[2] == b"b\n"
    assert ask(port, "/v1/users", authority="api.example.org")[2] == b"a\n"
    assert ask(port, "/anything", [("x-env", "canary")])[2] == b"b\n"
    assert ask(port, "/x?debug=1")[::2] == (418, b"debug\n")
    assert ask(port, "/x?debug=1", method="POST", body=b"")[2] == b"a\n"  # methods condition
    status, headers, _ = ask(port, "/old?q=2")
    assert (status, headers["location"]) == (308, "https://example.com/new?q=2")
    assert ask(port, "/")[2] == b"a\n"


def test_forwarding_headers_and_request_id(ask, cert, proxy, http_backends):
    (a,) = http_backends("a")
    port = free_port()
    proxy(https(port, cert, http="forwarded = true\n") + pool_toml("p", servers(a)))
    headers = [("x-forwarded-for", "6.6.6.6"), ("x-request-id", "abc-123"), ("x-secret", "1")]
    status, got, body = ask(port, "/headers", headers, authority="shop.example:8443")
    assert status == 200 and got["x-request-id"] == "abc-123"
    seen = json.loads(body)["headers"]
    assert [v for n, v in seen if n == "host"] == ["shop.example:8443"]  # :authority
    seen = dict(seen)
    assert seen["x-forwarded-for"] == "6.6.6.6, 127.0.0.1"
    assert seen["x-forwarded-proto"] == "https"
    assert seen["x-forwarded-host"] == "shop.example:8443"
    assert seen["forwarded"] == 'for=127.0.0.1;proto=https;host="shop.example:8443"'
    assert seen["x-request-id"] == "abc-123" and seen["x-secret"] == "1"
    status, got, body = ask(port, "/headers")  # no id from the client: one is made
    assert got["x-request-id"] == dict(json.loads(body)["headers"])["x-request-id"]


def test_retries_and_breaker(ask, cert, proxy, http_backends):
    bad, good = http_backends("bad", "good")
    port = free_port()
    port2 = free_port()
    http = {"breaker_failures": 2, "breaker_cool_off": '"30s"'}
    p = proxy(
        https(port, cert)
        + pool_toml("p", servers(bad, good), http={"retry_on": "[503]", "breaker_failures": 0})
        + https(port2, cert, pool="q").replace("listener.web", "listener.w2")
        + pool_toml("q", servers(bad, good), http=http)
    )
    statuses = [ask(port2, "/flaky/500")[0] for _ in range(8)]
    assert statuses.count(500) == 2  # then bad's breaker is open: only good answers
    assert p.wait_log(r"server q/bad circuit open")
    assert [ask(port, "/flaky")[0] for _ in range(4)] == [200] * 4  # bad's 503s retried
    assert bad.requests >= 3 and good.requests == 10


def test_limits(ask, cert, proxy, http_backends):
    (a,) = http_backends("a")
    port = free_port()
    http = 'max_headers = 10\nmax_body = "1k"\n'
    proxy(https(port, cert, http=http) + pool_toml("p", servers(a)))
    many = [(f"x-h{i}", "v") for i in range(20)]
    assert ask(port, "/", many)[0] == 431
    assert ask(port, "/digest", method="POST", body=b"x" * 5000)[0] == 413
    assert ask(port, "/digest", method="POST", body=b"x" * 1000)[0] == 200
    assert a.requests == 1  # only the last one reached the server


def test_response_timeout_is_504(ask, cert, proxy, http_backends):
    (a,) = http_backends("a")
    port = free_port()
    proxy(https(port, cert) + pool_toml("p", servers(a), http={"response_timeout": '"500ms"'}))
    assert ask(port, "/slow/2")[0] == 504
    assert ask(port, "/")[0] == 200


def test_large_upload_and_download(ask, cert, proxy, http_backends):
    (a,) = http_backends("a")
    port = free_port()
    proxy(https(port, cert) + pool_toml("p", servers(a)))
    body = os.urandom(8 << 20)
    status, _, got = ask(port, "/digest", method="POST", body=body)
    assert (status, got.decode()) == (200, f"{len(body)} {hashlib.sha256(body).hexdigest()}")
    status, _, got = ask(port, f"/chunked/{8 << 20}")
    assert status == 200 and got == b"c" * (8 << 20)
    status, headers, got = ask(port, f"/bytes/{4 << 20}")
    assert headers["content-length"] == str(4 << 20) and got == b"b" * (4 << 20)


def test_head_and_responses_without_content(ask, cert, proxy, http_backends):
    """HEAD, 304 and an empty chunked body: no content (their content-length, if any, does
    not count against the body: RFC 9110 §6.4.1, RFC 9114 §4.1.2)."""
    (a,) = http_backends("a")
    port = free_port()
    proxy(https(port, cert) + pool_toml("p", servers(a)))
    status, headers, body = ask(port, "/bytes/100", method="HEAD")
    assert (status, headers["content-length"], body) == (200, "100", b"")
    assert ask(port, "/status/304")[::2] == (304, b"")
    status, headers, body = ask(port, "/chunked/0")
    assert (status, body) == (200, b"")
    assert ask.version == "h1" or "transfer-encoding" not in headers  # HTTP/1.1 framing only
    assert ask(port, "/bytes/3")[2] == b"bbb"


def test_access_log_fields(ask, cert, proxy, http_backends):
    (a,) = http_backends("a")
    port = free_port()
    p = proxy(https(port, cert) + pool_toml("p", servers(a)))
    rid = f"req-{ask.version}"
    ask(port, "/bytes/10", [("x-request-id", rid)])
    assert wait_until(lambda: any(f"id={rid}" in line for line in p.access_lines()))
    line = next(line for line in p.access_lines() if f"id={rid}" in line)
    assert '"GET example.com/bytes/10" 200 10 route=- server=p/a' in line
    assert "retries=0" in line
    assert line.endswith(" http=" + {"h1": "1.1", "h2": "2", "h3": "3"}[ask.version]), line


def test_curl_http2(cert, proxy, http_backends):
    (a,) = http_backends("a")
    port = free_port()
    proxy(https(port, cert) + pool_toml("p", servers(a)))
    out = subprocess.run(
        ["curl", "-sS", "-k", "--http2", "-i", "-X", "POST", "--data-binary", "hello",
         "--resolve", f"example.com:{port}:127.0.0.1", f"https://example.com:{port}/digest"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("HTTP/2 200")
    assert out.stdout.endswith(f"5 {hashlib.sha256(b'hello').hexdigest()}")
    out = subprocess.run(
        ["curl", "-sS", "-k", "--http2", "-w", "%{http_version} %{size_download} ",
         "-o", "/dev/null", "-o", "/dev/null",
         f"https://127.0.0.1:{port}/chunked/{1 << 20}", f"https://127.0.0.1:{port}/bytes/7"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.stdout == f"2 {1 << 20} 2 7 ", out.stderr


def test_small_response_ends_with_its_data_frame(cert, proxy, http_backends):
    """A response whose body and end come in one read leaves as HEADERS and one DATA frame
    carrying END_STREAM, as nginx sends it, not an empty DATA frame after it."""
    (a,) = http_backends("a")
    port = free_port()
    proxy(https(port, cert) + pool_toml("p", servers(a)))
    with H2Client(port, timeout=30) as c:
        sids = [c.request("GET", "/bytes/7") for _ in range(3)]
        for sid in sids:
            r = c.response(sid)
            assert (r.status, len(r.body), r.ended) == (200, 7, True)
            frames = [e for e in c.events if isinstance(e, h2.events.DataReceived)]
            frames = [e for e in frames if e.stream_id == sid]
            assert [(e.data, e.stream_ended is not None) for e in frames] == [(r.body, True)]


def test_h2c_prior_knowledge_only_when_configured(proxy, http_backends):
    (a,) = http_backends("a")
    on, off = free_port(), free_port()
    proxy(
        f'[listener.on]\nbind = "127.0.0.1:{on}"\nprotocol = "http"\npool = "p"\n'
        "[listener.on.http]\nh2c = true\n"
        f'[listener.off]\nbind = "127.0.0.1:{off}"\nprotocol = "http"\npool = "p"\n'
        + pool_toml("p", servers(a))
    )
    out = subprocess.run(
        ["curl", "-sS", "--http2-prior-knowledge", "-i", f"http://127.0.0.1:{on}/headers"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 0 and out.stdout.startswith("HTTP/2 200"), out
    seen = dict(json.loads(out.stdout.split("\n\n", 1)[1])["headers"])
    assert seen["x-forwarded-proto"] == "http"
    # HTTP/1.1 still works on the h2c listener.
    out = subprocess.run(["curl", "-sS", f"http://127.0.0.1:{on}/"], capture_output=True,
                         text=True, timeout=30)  # fmt: skip
    assert out.stdout == "a\n"
    # Without h2c the preface is a bad HTTP/1.1 request: 400 and close, nothing forwarded.
    before = a.requests
    with socket.create_connection(("127.0.0.1", off), timeout=5) as s:
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 400"), data
    assert a.requests == before


def test_h2c_scheme_is_the_connections(proxy, http_backends):
    """Regression: the client's `:scheme` became X-Forwarded-Proto, so a clear-text h2c
    client could tell servers it came over TLS (what X-Forwarded-Proto is trusted for)."""
    (a,) = http_backends("a")
    port = free_port()
    proxy(
        f'[listener.on]\nbind = "127.0.0.1:{port}"\nprotocol = "http"\npool = "p"\n'
        "[listener.on.http]\nh2c = true\n" + pool_toml("p", servers(a))
    )
    with H2Client(port, tls=False) as c:
        pseudo = [(":method", "GET"), (":scheme", "https"), (":authority", "x"),
                  (":path", "/headers")]  # fmt: skip
        r = c.response(c.request(pseudo=pseudo))
    assert r.status == 200
    assert dict(json.loads(r.body)["headers"])["x-forwarded-proto"] == "http"


# -- defences: each attack from a raw h2 client, another client served meanwhile ------------


class Bystander:
    """A client connected before the attack, asked again after it, and a new one after it:
    the attack costs the attacker's connection only."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.client = H2Client(port)  # three requests in all, two on this connection
        assert self.client.response(self.client.request("GET", "/")).status == 200

    def check(self) -> None:
        c = self.client
        r = c.response(c.request("GET", "/bytes/100"))
        assert (r.status, r.body) == (200, b"b" * 100), (r, c.goaway)
        c.close()
        assert h2_ask(self.port, "GET", "/", [], None, "example.com")[0] == 200


def start_h2(proxy, cert, backend, http: str = "", pool_http: dict | None = None) -> int:
    port = free_port()
    proxy(https(port, cert, http=http) + pool_toml("p", servers(backend), http=pool_http or {}))
    return port


def test_rapid_reset_gets_goaway(cert, proxy, http_backends):
    (a,) = http_backends("a")
    port = start_h2(proxy, cert, a, "h2_max_resets = 50\n")
    other = Bystander(port)
    with H2Client(port) as c:
        for _ in range(200):  # open and cancel at once, all in a few writes (CVE-2023-44487)
            sid = c.conn.get_next_available_stream_id()
            c.conn.send_headers(sid, [(b":method", b"GET"), (b":scheme", b"https"),
                                      (b":authority", b"x"), (b":path", b"/slow/1")],
                                end_stream=True)  # fmt: skip
            c.conn.reset_stream(sid, 8)
        c.flush()
        assert c.wait_goaway().error_code == CALM
        assert c.wait_closed()
    other.check()
    assert a.requests < 100  # the flood was cut short


@pytest.mark.parametrize("frame", ["ping", "settings"])
def test_control_frame_flood_gets_goaway(frame, cert, proxy, http_backends):
    (a,) = http_backends("a")
    port = start_h2(proxy, cert, a, "h2_max_control = 100\n")
    other = Bystander(port)
    with H2Client(port) as c:
        for i in range(400):
            if frame == "ping":
                c.conn.ping(i.to_bytes(8, "big"))
            else:
                c.conn.update_settings({})
        c.flush()
        assert c.wait_goaway().error_code == CALM
        assert c.wait_closed()
    other.check()


def test_streams_over_the_concurrency_limit_are_refused(cert, proxy, http_backends):
    """A client that opens more streams than SETTINGS_MAX_CONCURRENT_STREAMS (as one racing
    the server's SETTINGS does) gets the extra ones refused, not its connection cut."""
    (a,) = http_backends("a")
    port = start_h2(proxy, cert, a, "h2_max_streams = 5\n")
    other = Bystander(port)
    with H2Client(port) as c:  # sends before it read the server's SETTINGS
        sids = [c.request("GET", "/slow/0.5") for _ in range(7)]
        assert c.wait(lambda: all(c.streams[s].done for s in sids))
        results = [(c.streams[s].status, c.streams[s].reset) for s in sids]
        assert results == [(200, None)] * 5 + [(0, REFUSED)] * 2, (results, c.goaway)
        assert c.goaway is None
        r = c.response(c.request("GET", "/"))  # the connection goes on
        assert r.status == 200
    other.check()
    assert a.requests == 5 + 1 + 3  # the refused ones were not forwarded


def continuation_flood(count: int) -> bytes:
    from hpack import Encoder
    from hyperframe.frame import ContinuationFrame, HeadersFrame

    block = Encoder().encode([(b":method", b"GET"), (b":scheme", b"https"),
                              (b":authority", b"x"), (b":path", b"/")])  # fmt: skip
    out = HeadersFrame(1, data=block, flags=["END_STREAM"]).serialize()
    for _ in range(count):  # never END_HEADERS
        out += ContinuationFrame(1, data=Encoder().encode([(b"x-pad", b"p" * 100)])).serialize()
    return out


def test_continuation_flood_gets_goaway(cert, proxy, http_backends):
    (a,) = http_backends("a")
    port = start_h2(proxy, cert, a)
    other = Bystander(port)
    with H2Client(port) as c:
        c.send_raw(continuation_flood(2000))
        assert c.wait_goaway().error_code == PROTOCOL_ERROR
        assert c.wait_closed()
    other.check()
    assert a.requests == 3  # the bystander's only


def test_hpack_bomb_and_oversized_header_list_get_goaway(cert, proxy, http_backends):
    (a,) = http_backends("a")
    port = start_h2(proxy, cert, a, "max_header_bytes = 8192\n")
    other = Bystander(port)
    # A 4000-byte field put in the HPACK table once, then referenced by index (one byte each):
    # a few KB on the wire that would decode to 400 KB.
    with H2Client(port) as c:
        c.request("GET", "/", [("x-bomb", "a" * 4000)] * 100)
        assert c.wait_goaway().error_code == CALM
        assert c.wait_closed()
    with H2Client(port) as c:  # one plain field over max_header_bytes
        c.request("GET", "/", [("x-big", "a" * 9000)])
        assert c.wait_goaway().error_code == CALM
    other.check()
    assert a.requests == 3  # the bystander's only


def test_hpack_table_over_the_advertised_size_gets_goaway(cert, proxy, http_backends):
    """SETTINGS_HEADER_TABLE_SIZE under 4096: a client that acknowledged it but keeps its
    4096-byte table (it never sends the table size update of RFC 7541 §4.2; jh2's decoder
    lets it, l7/h2.py does not) gets GOAWAY COMPRESSION_ERROR, one whose update is over the
    limit a GOAWAY too, nothing of either forwarded; a client that shrinks its table (h2's
    encoder) is served."""
    from hpack import Encoder
    from hpack.hpack import encode_integer
    from hyperframe.frame import HeadersFrame

    SETTINGS = h2.events.RemoteSettingsChanged
    (a,) = http_backends("a")
    port = start_h2(proxy, cert, a, "h2_header_table_size = 256\n")
    other = Bystander(port)
    with H2Client(port) as c:
        for _ in range(2):  # the second one's field would come from the table, if it fit
            assert c.response(c.request("GET", "/", [("x-big", "b" * 1000)])).status == 200
    update = encode_integer(4096, 5)
    update[0] |= 0x20  # a dynamic table size update to 4096
    for first, code in ((b"", (COMPRESSION,)), (bytes(update), (PROTOCOL_ERROR, COMPRESSION))):
        with H2Client(port) as c:
            # Our SETTINGS came, and its ACK goes out before the frame below.
            assert c.wait(lambda: any(isinstance(e, SETTINGS) for e in c.events))
            fields = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"x"),
                      (b":path", b"/"), (b"x-big", b"b" * 1000)]  # fmt: skip
            block = first + Encoder().encode(fields)  # indexed in a 4096-byte table
            c.send_raw(HeadersFrame(1, data=block, flags=["END_STREAM", "END_HEADERS"]).serialize())
            assert c.wait_goaway().error_code in code
            assert c.wait_closed()
    other.check()
    assert a.requests == 3 + 2  # the bystander's and the well-behaved client's


@pytest.mark.parametrize("sent", [5, 20])
def test_content_length_that_disagrees_with_data(sent, cert, proxy):
    from tests.e2e.httpbackend import RawBackend

    raw = RawBackend()
    try:
        port = start_h2(proxy, cert, raw)
        with H2Client(port) as c:
            sid = c.request("POST", "/", [("content-length", "10")], b"x" * sent, end=True)
            c.wait(lambda: c.goaway is not None or c.streams[sid].done)
            r = c.streams[sid]
            assert (c.goaway and c.goaway.error_code == PROTOCOL_ERROR) or r.reset == PROTOCOL_ERROR
            assert r.status == 0
        time.sleep(0.3)
        assert raw.heads == []  # no complete request reached the server
        assert h2_ask(port, "GET", "/", [], None, "x")[2] == b"ok"
    finally:
        raw.close()


# Requests that RFC 9113 §8.2-8.3 and RFC 9114 §4.2-4.3 make malformed (test_http3_requests.py
# sends them over HTTP/3).
MALFORMED = [
    [(":method", "GET"), (":scheme", "https"), (":authority", "x"), (":path", "/"),
     ("connection", "keep-alive")],
    [(":method", "POST"), (":scheme", "https"), (":authority", "x"), (":path", "/"),
     ("transfer-encoding", "chunked")],
    [(":method", "GET"), (":scheme", "https"), (":authority", "x"), (":path", "/"),
     ("te", "gzip")],
    [(":method", "GET"), (":scheme", "https"), (":authority", "x")],
    [(":method", "GET"), (":scheme", "https"), (":authority", "x"), (":path", "/"),
     ("X-Upper", "1")],
    [(":method", "GET"), (":scheme", "https"), ("x-a", "1"), (":authority", "x"),
     (":path", "/")],
    [(":method", "GET"), (":scheme", "https"), (":authority", "x"), (":path", "/"),
     (":path", "/b")],
    [(":method", "GET"), (":scheme", "https"), (":authority", "x"), (":path", "/"),
     (":foo", "1")],
    [(":method", "GET"), (":scheme", "https"), (":authority", "x"), (":path", "")],
]  # fmt: skip
MALFORMED_IDS = ["connection", "transfer-encoding", "te", "no-path", "uppercase", "pseudo-after",
                 "two-paths", "unknown-pseudo", "empty-path"]  # fmt: skip


def test_body_longer_than_content_length_is_never_forwarded(cert, proxy):
    """DATA past the declared content-length before END_STREAM: refused as it arrives, and
    the excess, which the HTTP/1.1 server would read as a request of its own, never sent
    (test_http3_requests.py has the same for HTTP/3)."""
    from tests.e2e.httpbackend import RawBackend

    raw = RawBackend()
    try:
        port = start_h2(proxy, cert, raw)
        with H2Client(port) as c:
            sid = c.request("POST", "/", [("content-length", "10")], None, end=False)
            c.send_body(sid, b"a" * 6, end=False)
            assert c.wait(lambda: b"a" * 6 in raw.data(), timeout=5)
            c.send_body(sid, b"aaaaGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", end=False)
            c.wait(lambda: c.goaway is not None or c.streams[sid].done)
            r = c.streams[sid]
            assert (c.goaway and c.goaway.error_code == PROTOCOL_ERROR) or r.reset == PROTOCOL_ERROR
            assert r.status == 0
        time.sleep(0.3)
        assert b"/smuggled" not in raw.data() and raw.heads == []
    finally:
        raw.close()


# More that only HTTP/2 sends this way (l7/h2fields.py decides; tests/unit/test_l7_h2fields.py
# has every rule).
MALFORMED_H2 = [
    [(":method", "GET"), (":scheme", "https"), (":authority", "x"), (":path", "/"),
     ("x-a", "1\r\nx-smuggled: 1")],
    [(":method", "GET"), (":scheme", "https"), (":authority", "x"), (":path", "/"),
     ("x-a", " padded ")],
    [(":method", "GET"), (":scheme", "https"), (":authority", "x"), (":path", "/"),
     (":status", "200")],
    [(":method", "GET"), (":scheme", "https"), (":path", "/"), ("host", "x"), ("host", "y")],
    [(":method", "GET"), (":scheme", "https"), (":path", "/")],
    [(":method", "CONNECT"), (":authority", "x:443"), (":path", "/")],
]  # fmt: skip
MALFORMED_H2_IDS = ["crlf-value", "padded-value", "status", "two-hosts", "no-authority",
                    "connect-path"]  # fmt: skip


@pytest.mark.parametrize("fields", MALFORMED + MALFORMED_H2, ids=MALFORMED_IDS + MALFORMED_H2_IDS)
def test_malformed_requests_are_refused_and_not_forwarded(fields, cert, proxy, http_backends):
    """RFC 9113 §8.1.1: a malformed request is a stream error; the connection goes on."""
    (a,) = http_backends("a")
    port = start_h2(proxy, cert, a)
    other = Bystander(port)
    with H2Client(port) as c:
        sid = c.request(pseudo=fields)
        c.wait(lambda: c.goaway is not None or c.streams[sid].done)
        r = c.streams[sid]
        assert (r.reset, r.status, c.goaway) == (PROTOCOL_ERROR, 0, None)
        assert c.response(c.request("GET", "/")).status == 200
    other.check()
    assert a.requests == 3 + 1  # the bystander's and the good one after the malformed one


@pytest.mark.parametrize(
    "trailers",
    [[(":path", "/x")], [("x-sum", "1\r\n\r\nGET /smuggled HTTP/1.1")], [("X-Sum", "1")]],
    ids=["pseudo-header", "crlf-value", "uppercase"],
)
def test_malformed_request_trailers_reset_the_stream(trailers, cert, proxy):
    """A trailer section with a pseudo-header (RFC 9113 §8.1) or a malformed field: the stream
    is reset, and the chunked body the server was reading never ends (nor carries them)."""
    from tests.e2e.httpbackend import RawBackend

    raw = RawBackend()
    try:
        port = start_h2(proxy, cert, raw)
        with H2Client(port) as c:
            sid = c.request("POST", "/", [("te", "trailers")], None, end=False)
            c.send_body(sid, b"abc", end=False)
            assert c.wait(lambda: b"abc" in raw.data(), timeout=5)
            fields = [(n.encode(), v.encode()) for n, v in trailers]
            c.conn.send_headers(sid, fields, end_stream=True)
            c.flush()
            c.wait(lambda: c.goaway is not None or c.streams[sid].done)
            r = c.streams[sid]
            assert (r.reset, r.status, c.goaway) == (PROTOCOL_ERROR, 0, None)
        time.sleep(0.3)
        data = raw.data()
        assert b"/smuggled" not in data and b"x-sum" not in data.lower()
        assert b"\r\n0\r\n" not in data and raw.heads == []  # no last chunk: never complete
    finally:
        raw.close()


def test_authority_and_host_must_agree(cert, proxy, http_backends):
    """RFC 9113 §8.3.1: a Host that differs from :authority makes the request malformed: the
    stream is reset (PROTOCOL_ERROR, l7/h2fields.py), nothing is forwarded."""
    (a,) = http_backends("a")
    port = start_h2(proxy, cert, a)
    with H2Client(port, authority="a.test") as c:
        sid = c.request("GET", "/headers", [("host", "b.test")])
        c.wait(lambda: c.goaway is not None or c.streams[sid].done)
        r = c.streams[sid]
        assert (c.goaway and c.goaway.error_code == PROTOCOL_ERROR) or r.reset == PROTOCOL_ERROR
        assert r.status == 0 and a.requests == 0
    with H2Client(port, authority="a.test") as c:
        r = c.response(c.request("GET", "/headers", [("host", "a.test")]))  # same: fine
        assert r.status == 200
        assert [v for n, v in json.loads(r.body)["headers"] if n == "host"] == ["a.test"]
        # No :authority: host stands in for it (RFC 9113 §8.3.1).
        pseudo = [(":method", "GET"), (":scheme", "https"), (":path", "/headers")]
        r = c.response(c.request(pseudo=pseudo, headers=[("host", "c.test")]))
        assert [v for n, v in json.loads(r.body)["headers"] if n == "host"] == ["c.test"]
    assert a.requests == 2


def test_zero_window_stall_is_reset_after_body_timeout(cert, proxy, http_backends):
    (a,) = http_backends("a")
    port = start_h2(proxy, cert, a, 'body_timeout = "1s"\n')
    other = Bystander(port)
    with H2Client(port, window=0) as c:  # never lets the server send a body byte
        big = c.request("GET", f"/bytes/{1 << 20}")
        small = c.request("GET", "/bytes/100")
        c.wait(lambda: c.streams[big].done and c.streams[small].done, timeout=5)
        resets = (c.streams[big].reset, c.streams[small].reset)
        assert resets == (3, 3), c.streams  # FLOW_CONTROL_ERROR, the small one too
        r = c.response(c.request("HEAD", "/bytes/100"))  # no body: the connection still works
        assert (r.status, r.headers["content-length"], r.ended) == (200, "100", True)
    other.check()


def test_a_slow_reader_does_not_block_other_streams(cert, proxy, http_backends):
    (a,) = http_backends("a")
    port = start_h2(proxy, cert, a)
    with H2Client(port, window=65535) as c:
        slow = c.request("GET", f"/bytes/{8 << 20}", hold=True)  # its window is never opened
        assert c.wait(lambda: len(c.streams[slow].body) == 65535)
        for _ in range(3):
            r = c.response(c.request("GET", f"/bytes/{200_000}"))
            assert (r.status, len(r.body)) == (200, 200_000)
        assert not c.streams[slow].done and len(c.streams[slow].body) == 65535
        c.conn.acknowledge_received_data(65535, slow)  # now read it all
        c.streams[slow].hold = False
        c.flush()
        r = c.response(slow, timeout=30)
        assert r.ended and len(r.body) == 8 << 20


def test_shutdown_sends_goaway_and_lets_streams_finish(cert, proxy, http_backends):
    (a,) = http_backends("a")
    port = free_port()
    p = proxy(https(port, cert) + pool_toml("p", servers(a)))
    with H2Client(port) as c:
        sid = c.request("GET", "/slow/1.5")
        assert wait_until(lambda: a.requests == 1, timeout=5)
        p.proc.send_signal(signal.SIGTERM)
        goaway = c.wait_goaway()
        assert goaway.error_code == NO_ERROR and goaway.last_stream_id == sid
        r = c.response(sid)
        assert (r.status, r.body, r.reset) == (200, b"a\n", None)
        assert c.wait_closed()
    assert p.proc.wait(10) == 0


def test_status_shows_h2_counters(cert, proxy, http_backends):
    (a,) = http_backends("a")
    port, admin = free_port(), free_port()
    proxy(
        f'[admin]\nbind = "127.0.0.1:{admin}"\n'
        + https(port, cert, http="h2_max_control = 20\n")
        + pool_toml("p", servers(a))
    )
    with H2Client(port) as c:
        sids = [c.request("GET", "/") for _ in range(3)]
        c.wait(lambda: all(c.streams[s].done for s in sids))
        c.reset(c.request("GET", "/slow/1"))
        for i in range(50):
            c.conn.ping(i.to_bytes(8, "big"))
        c.flush()
        c.wait_goaway()

    def listener() -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/status", timeout=5) as r:
            return json.loads(r.read())["listeners"][0]

    want = {"h2_connections": 1, "h2_streams": 4, "h2_resets": 1, "h2_goaways": 1}
    assert wait_until(lambda: {k: listener().get(k) for k in want} == want, timeout=5), {
        k: v for k, v in listener().items() if k.startswith("h2")
    }
