"""HTTP/2 end to end: the L7 behaviours over an `https` listener for HTTP/1.1 and HTTP/2
clients alike (the `client` parameter; HTTP/3 adds a third), h2c with prior knowledge, and
each HTTP/2 defence sent by a raw h2 client (tests/e2e/h2client.py), with another connection
served meanwhile and afterwards."""

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

import h11
import pytest

from tests.e2e.h2client import H2Client, H2Response
from tests.e2e.helpers import free_port, make_cert, pool_toml, wait_until
from tests.e2e.httpbackend import HttpBackend

CALM, PROTOCOL_ERROR, REFUSED, NO_ERROR = 11, 1, 7, 0


@pytest.fixture(scope="module")
def cert(tmp_path_factory) -> tuple[str, str]:
    return make_cert(tmp_path_factory.mktemp("h2certs"), "example.com")


def https(port: int, cert, pool: str | None = "p", http: str = "", routes: str = "") -> str:
    """An https listener named web; `http` is the body of its [listener.web.http] table."""
    text = f'[listener.web]\nbind = "127.0.0.1:{port}"\nprotocol = "https"\n'
    if pool:
        text += f'pool = "{pool}"\n'
    text += f'[[listener.web.certs]]\ncert = "{cert[0]}"\nkey = "{cert[1]}"\n'
    if http:
        text += "[listener.web.http]\n" + http
    return text + "\n" + routes


def servers(*backends: HttpBackend) -> list[str]:
    return [f'name = "{b.name}"\naddress = "{b.address}"' for b in backends]


def h1_ask(port, method, path, headers, body, authority) -> tuple[int, dict, bytes]:
    """One HTTP/1.1 request over TLS (ALPN http/1.1), read with h11."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
        with ctx.wrap_socket(raw, server_hostname="example.com") as s:
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


@pytest.fixture(params=["h1", "h2"])
def ask(request):
    """`ask(port, path, headers=[], method="GET", body=None, authority="example.com")` ->
    (status, headers, body), over the client protocol of this run."""
    impl = h1_ask if request.param == "h1" else h2_ask

    def call(port, path, headers=(), method="GET", body=None, authority="example.com"):
        return impl(port, method, path, list(headers), body, authority)

    call.version = request.param  # type: ignore[attr-defined]
    return call


ROUTES = """
[[listener.web.routes]]
name = "api"
host = ["api.example.com", "*.api.example.com"]
path_prefix = "/v1/"
strip_prefix = "/v1"
pool = "b"
response_headers = {set = {"x-route" = "api"}}
[[listener.web.routes]]
name = "canary"
headers = [{name = "x-env", equals = "canary"}]
pool = "b"
[[listener.web.routes]]
name = "debug"
query = [{name = "debug", equals = "1"}]
methods = ["GET"]
respond = {status = 418, body = "debug\\n"}
[[listener.web.routes]]
name = "old"
path = "/old"
redirect = {status = 308, to = "{scheme}://{host}/new?{query}"}
[[listener.web.routes]]
name = "main"
path_prefix = "/"
pool = "a"
"""


# -- the L7 behaviours, over HTTP/1.1 and HTTP/2 ---------------------------------------------


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
