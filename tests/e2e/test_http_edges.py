"""Request edges an attacker reaches for, end to end on both parsers: upgrades other than
WebSocket (h2c smuggling), forwarding headers, absolute-form request-targets. A raw-bytes
backend shows exactly what reaches the server."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import h11
import pytest

from tests.e2e.helpers import free_port, pool_toml
from tests.e2e.httpbackend import RawBackend
from tests.e2e.test_http import exchange, get, listener, parser, read_response, servers

__all__ = ["parser"]  # the fixture that runs every test here on both parsers

H2C = (
    b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
    b"HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"
)
SWITCH = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
DENY_INTERNAL = """
[[listener.web.routes]]
name = "internal"
path_prefix = "/internal"
respond = {status = 403, body = "no\\n"}
[[listener.web.routes]]
name = "main"
path_prefix = "/"
pool = "p"
"""


@pytest.fixture
def raw_backend():
    made: list[RawBackend] = []

    def make(answer: bytes | None = None) -> RawBackend:
        backend = RawBackend(answer) if answer is not None else RawBackend()
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


def read_n(s: socket.socket, n: int) -> list[int]:
    """The statuses of up to `n` responses read from `s` (fewer if the connection ends);
    one h11 reader throughout, so responses that arrive in one read are all seen."""
    conn = h11.Connection(h11.CLIENT)
    statuses: list[int] = []
    while len(statuses) < n:
        conn.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
        conn.send(h11.EndOfMessage())
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(s.recv(65536))
            elif isinstance(event, h11.Response):
                statuses.append(event.status_code)
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                return statuses
        if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            return statuses
        try:
            conn.start_next_cycle()
        except h11.LocalProtocolError:
            return statuses  # the server closes after this response
    return statuses


# -- upgrades ------------------------------------------------------------------------------------


def test_h2c_upgrade_is_stripped_and_what_follows_is_the_next_request(proxy, raw_backend):
    """Issue 9.1: `Upgrade: h2c` reaches the server as plain HTTP (no Upgrade, no Connection
    upgrade, no HTTP2-Settings), and the request pipelined after it is parsed as a request."""
    backend = raw_backend()
    port = free_port()
    proxy(listener(port, pool=None, routes=DENY_INTERNAL) + pool_toml("p", servers(backend)))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(
            b"GET /first HTTP/1.1\r\nHost: a.test\r\n" + H2C + b"\r\n"
            b"GET /internal HTTP/1.1\r\nHost: a.test\r\n" + H2C + b"\r\n"  # answered by l4lb
            b"GET /second HTTP/1.1\r\nHost: a.test\r\n\r\n"
        )
        assert read_n(s, 3) == [200, 403, 200]
    heads = [h.lower() for h in backend.heads]
    assert [h.split(b"\r\n")[0] for h in heads] == [b"get /first http/1.1", b"get /second http/1.1"]
    for name in (b"upgrade:", b"http2-settings:", b"connection:"):
        assert name not in heads[0]


@pytest.mark.parametrize("chunked", [False, True])
def test_h2c_upgrade_with_a_body_forwards_the_body(proxy, raw_backend, chunked):
    """httptools skips the body of what it takes for an upgrade: a declined upgrade's body
    must still be read as its body, not as the next request (a desync)."""
    backend = raw_backend()
    port = free_port()
    proxy(listener(port) + pool_toml("p", servers(backend)))
    smuggled = b"GET /internal HTTP/1.1\r\nHost: a.test\r\n\r\n"
    if chunked:
        framing, body = b"Transfer-Encoding: chunked\r\n", b"%x\r\n%b\r\n0\r\n\r\n"
        body = body % (len(smuggled), smuggled)
    else:
        framing, body = b"Content-Length: %d\r\n" % len(smuggled), smuggled
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(
            b"POST /p HTTP/1.1\r\nHost: a.test\r\n"
            + H2C
            + framing
            + b"\r\n"
            + body
            + b"GET /after HTTP/1.1\r\nHost: a.test\r\n\r\n"
        )
        assert read_n(s, 2) == [200, 200]
    data = backend.data()
    assert data.count(smuggled) == 1  # once, inside the POST body
    assert [h.split(b"\r\n")[0] for h in backend.heads] == [
        b"POST /p HTTP/1.1",
        b"GET /after HTTP/1.1",
    ]
    assert b"upgrade" not in data.lower()


def test_curl_http2_upgrade_with_a_body(proxy, raw_backend):
    """`curl --http2 -d` over cleartext offers h2c with a body: answered over HTTP/1.1."""
    backend = raw_backend()
    port = free_port()
    proxy(listener(port) + pool_toml("p", servers(backend)))
    out = subprocess.run(
        ["curl", "-s", "-m", "10", "--http2", "-d", "hello", f"http://127.0.0.1:{port}/c"],
        capture_output=True,
        check=True,
    )
    assert out.stdout == b"ok"
    (head,) = backend.heads
    assert b"upgrade" not in head.lower() and backend.data().endswith(b"\r\n\r\nhello")


@pytest.mark.parametrize("together", [False, True])
def test_a_101_to_a_declined_upgrade_is_502_and_never_a_tunnel(proxy, raw_backend, together):
    """The h2c smuggling attack: a server that answers 101 anyway gets no tunnel; the client
    gets 502, and a request sent after it (in the same write or after the answer) is routed
    as any other, so a route that refuses /internal still refuses it."""
    backend = raw_backend(SWITCH)
    port = free_port()
    proxy(
        listener(port, pool=None, routes=DENY_INTERNAL)
        + pool_toml("p", servers(backend), retries=0)
    )
    first = b"GET / HTTP/1.1\r\nHost: a.test\r\n" + H2C + b"\r\n"
    smuggled = b"GET /internal HTTP/1.1\r\nHost: a.test\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        if together:
            s.sendall(first + smuggled)
            assert read_n(s, 2) == [502, 403]
        else:
            s.sendall(first)
            assert read_response(s)[0] == 502
            try:
                s.sendall(smuggled)
                status = read_response(s)[0]
            except OSError:
                status = 0  # closed after the 502: as good
            assert status in (0, 403)
    assert b"/internal" not in backend.data()
    assert b"upgrade" not in backend.data().lower()


def test_a_101_to_a_plain_request_is_502(proxy, raw_backend):
    backend = raw_backend(SWITCH)
    port = free_port()
    proxy(listener(port) + pool_toml("p", servers(backend), retries=0))
    assert get(port, "/")[0] == 502


def test_websocket_can_be_turned_off(proxy, raw_backend):
    """`upgrades = []`: even WebSocket is forwarded as plain HTTP (and a 101 is a 502)."""
    backend = raw_backend(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
    port = free_port()
    extra = "[listener.web.http]\nupgrades = []\n"
    proxy(listener(port, extra=extra) + pool_toml("p", servers(backend), retries=0))
    ws = b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
    status, _, _ = exchange(port, b"GET /ws HTTP/1.1\r\nHost: a\r\n" + ws + b"\r\n")
    assert status == 502
    assert b"upgrade" not in backend.data().lower()


# -- forwarding headers --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["append", "replace"])
def test_x_forwarded_for_is_appended_to_by_default(proxy, http_backends, mode):
    """Issue 9.3: as nginx, HAProxy and Envoy; X-Forwarded-Proto/-Host stay l4lb's for an
    untrusted client in both modes."""
    (a,) = http_backends("a")
    port = free_port()
    extra = f'[listener.web.http]\nx_forwarded_for = "{mode}"\n' if mode != "append" else ""
    proxy(listener(port, extra=extra) + pool_toml("p", servers(a)))
    _, _, body = get(
        port,
        "/headers",
        "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.test\r\n",
    )
    seen = dict(json.loads(body)["headers"])
    want = "6.6.6.6, 127.0.0.1" if mode == "append" else "127.0.0.1"
    assert seen["x-forwarded-for"] == want
    assert seen["x-forwarded-proto"] == "http" and seen["x-forwarded-host"] == "example.com"


# -- absolute-form request-targets ---------------------------------------------------------------

HOST_ROUTES = """
[[listener.web.routes]]
name = "a"
host = ["a.test"]
pool = "pa"
[[listener.web.routes]]
name = "evil"
host = ["evil.test"]
pool = "pe"
"""


def test_absolute_form_routes_and_forwards_by_its_authority(proxy, raw_backend, tmp_path):
    """Issue 16: the target's authority replaces Host (RFC 9112 §3.2.2) for routing, Host and
    X-Forwarded-Host, and the request goes upstream in origin-form; `l4lb route
    --absolute-form` takes the same route."""
    a, evil = raw_backend(), raw_backend()
    port = free_port()
    config = (
        listener(port, pool=None, routes=HOST_ROUTES)
        + pool_toml("pa", servers(a))
        + pool_toml("pe", servers(evil))
    )
    p = proxy(config)
    status, _, _ = exchange(port, b"GET http://evil.test/x?q=1 HTTP/1.1\r\nHost: a.test\r\n\r\n")
    assert status == 200
    assert a.data() == b""
    (head,) = evil.heads
    lines = head.split(b"\r\n")
    assert lines[0] == b"GET /x?q=1 HTTP/1.1"
    assert b"host: evil.test" in lines and b"x-forwarded-host: evil.test" in lines
    assert b"a.test" not in head
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "l4lb",
            "route",
            str(p.path),
            "GET",
            "http://evil.test/x?q=1",
            "-H",
            "Host: a.test",
            "--absolute-form",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "route[1] 'evil': matched" in out.stdout, out.stdout


def test_absolute_form_without_host_and_without_path(proxy, raw_backend):
    backend = raw_backend()
    port = free_port()
    proxy(
        listener(port, pool=None, routes=HOST_ROUTES)
        + pool_toml("pa", servers(backend))
        + pool_toml("pe", servers(backend))
    )
    assert exchange(port, b"GET http://a.test:8080 HTTP/1.0\r\n\r\n")[0] == 200
    (head,) = backend.heads
    lines = head.split(b"\r\n")
    assert lines[0] == b"GET / HTTP/1.1" and b"host: a.test:8080" in lines


@pytest.mark.parametrize(
    "target",
    [b"ftp://a.test/x", b"http://user@a.test/x", b"http://:80/x", b"http://a.test/x#frag"],
)
def test_absolute_form_that_cannot_be_routed_is_400(proxy, raw_backend, target):
    backend = raw_backend()
    port = free_port()
    proxy(listener(port) + pool_toml("p", servers(backend)))
    status, _, _ = exchange(port, b"GET " + target + b" HTTP/1.1\r\nHost: a.test\r\n\r\n")
    assert status == 400
    assert backend.data() == b""


def test_get_with_a_body_is_forwarded_framed(proxy, raw_backend):
    """A GET (or HEAD) body is forwarded with its framing (RFC 9110 §9.3.1 gives it no
    meaning, but dropping it would desync the connection), as nginx and HAProxy do."""
    backend = raw_backend()
    port = free_port()
    proxy(listener(port) + pool_toml("p", servers(backend)))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(
            b"GET /g HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
            b"GET /h HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        assert read_n(s, 2) == [200, 200]
    assert b"content-length: 5\r\n" in backend.heads[0] and len(backend.heads) == 2
    assert b"\r\n\r\nhello" in backend.data()
