"""The HTTP listener end to end: real clients (h11, curl, websockets), real HTTP backends."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import h11
import pytest

from tests.e2e.helpers import free_port, pool_toml, recv_head, wait_until
from tests.e2e.httpbackend import HttpBackend, WsBackend

PARSER = {"name": "httptools"}


@pytest.fixture(autouse=True, params=["httptools", "h11"])
def parser(request):
    """Every test here runs on both request parsers l4lb ships."""
    PARSER["name"] = request.param
    yield request.param
    PARSER["name"] = "httptools"


def listener(port: int, pool: str | None = "p", extra: str = "", routes: str = "") -> str:
    text = f'[listener.web]\nbind = "127.0.0.1:{port}"\nprotocol = "http"\n'
    if pool:
        text += f'pool = "{pool}"\n'
    choice = f'parser = "{PARSER["name"]}"\n'
    if "[listener.web.http]\n" in extra:
        extra = extra.replace("[listener.web.http]\n", "[listener.web.http]\n" + choice)
    else:
        extra += "\n[listener.web.http]\n" + choice
    return text + extra + "\n" + routes


def servers(*backends: HttpBackend) -> list[str]:
    return [f'name = "{b.name}"\naddress = "{b.address}"' for b in backends]


def exchange(port: int, raw: bytes, *, timeout: float = 10) -> tuple[int, dict, bytes]:
    """Send raw request bytes on a new connection; read one response with h11."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(raw)
        return read_response(s)


def read_response(s: socket.socket, method: bytes = b"GET") -> tuple[int, dict, bytes]:
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method=method, target="/", headers=[("host", "x")]))
    conn.send(h11.EndOfMessage())
    status, headers, body = 0, {}, b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(s.recv(262144))
            continue
        if isinstance(event, h11.Response):
            status = event.status_code
            headers = {k.decode(): v.decode() for k, v in event.headers}
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            return status, headers, body


def get(port: int, path: str, headers: str = "", method: str = "GET"):
    raw = f"{method} {path} HTTP/1.1\r\nHost: example.com\r\n{headers}\r\n".encode()
    return exchange(port, raw)


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
redirect = {status = 308, to = "https://{host}/new?{query}"}
[[listener.web.routes]]
name = "main"
path_prefix = "/"
pool = "a"
"""


def test_routing_table(proxy, http_backends):
    a, b = http_backends("a", "b")
    port = free_port()
    proxy(
        listener(port, pool=None, routes=ROUTES)
        + pool_toml("a", servers(a))
        + pool_toml("b", servers(b))
    )

    def ask(path: str, host: str = "example.com", extra: str = "", method: str = "GET"):
        raw = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()
        return exchange(port, raw)

    status, headers, body = ask("/v1/users?x=1", host="api.example.com")
    assert (status, body, headers["x-route"]) == (200, b"b\n", "api")
    assert b.seen[-1]["target"] == "/users?x=1"  # prefix stripped, query kept
    assert ask("/v1/users", host="eu.api.example.com:8080")[2] == b"b\n"
    assert ask("/v1/users", host="api.example.org")[2] == b"a\n"
    assert ask("/anything", extra="X-Env: canary\r\n")[2] == b"b\n"
    assert ask("/x?debug=1")[:1] == (418,) and ask("/x?debug=1")[2] == b"debug\n"
    assert ask("/x?debug=1", method="POST")[2] == b"a\n"  # methods condition
    status, headers, _ = ask("/old?q=2")
    assert (status, headers["location"]) == (308, "https://example.com/new?q=2")
    assert ask("/")[2] == b"a\n"


def test_no_route_is_404_with_request_id(proxy, http_backends):
    (a,) = http_backends("a")
    port = free_port()
    routes = '[[listener.web.routes]]\npath_prefix = "/app/"\npool = "p"\n'
    proxy(listener(port, pool=None, routes=routes) + pool_toml("p", servers(a)))
    status, headers, body = get(port, "/other")
    assert status == 404 and headers["x-request-id"] in body.decode()


def test_headers_sent_upstream(proxy, http_backends):
    (a,) = http_backends("a")
    port = free_port()
    proxy(
        listener(port, extra='[listener.web.http]\nforwarded = true\ntraceparent = "create"\n')
        + pool_toml("p", servers(a))
    )
    status, headers, body = get(
        port,
        "/headers",
        "X-Forwarded-For: 6.6.6.6\r\nConnection: keep-alive, x-secret\r\nX-Secret: 1\r\n"
        "Keep-Alive: timeout=5\r\nX-Request-ID: abc-123\r\n",
    )
    assert status == 200 and headers["x-request-id"] == "abc-123"
    seen = dict(json.loads(body)["headers"])
    assert seen["x-forwarded-for"] == "6.6.6.6, 127.0.0.1"  # appended to, as nginx does
    assert seen["x-forwarded-proto"] == "http" and seen["x-forwarded-host"] == "example.com"
    assert seen["forwarded"] == "for=127.0.0.1;proto=http;host=example.com"
    assert seen["via"] == "1.1 l4lb" and seen["x-request-id"] == "abc-123"
    assert len(seen["traceparent"].split("-")) == 4
    for hop in ("x-secret", "keep-alive"):
        assert hop not in seen


def test_keepalive_reuses_server_connections(proxy, http_backends):
    (a,) = http_backends("a")
    port = free_port()
    proxy(listener(port) + pool_toml("p", servers(a)))
    for _ in range(20):  # twenty clients, one after the other
        assert get(port, "/")[0] == 200
    assert a.accepted == 1 and a.requests == 20


def test_big_bodies_stream_both_ways(proxy, http_backends):
    (a,) = http_backends("a")
    port = free_port()
    p = proxy(listener(port) + pool_toml("p", servers(a)))
    size = 64 << 20
    chunk = os.urandom(1 << 20)
    digest = hashlib.sha256()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(f"POST /digest HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode())
        for _ in range(size // len(chunk)):
            digest.update(chunk)
            s.sendall(chunk)
        status, _, body = read_response(s)
    assert (status, body.decode()) == (200, f"{size} {digest.hexdigest()}")
    # Chunked upload, chunked download.
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"POST /digest HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        s.sendall(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        status, _, body = read_response(s)
    assert body.decode() == f"11 {hashlib.sha256(b'hello world').hexdigest()}"
    status, headers, body = get(port, f"/chunked/{8 << 20}")
    assert headers.get("transfer-encoding") == "chunked" and body == b"c" * (8 << 20)
    status_text = Path(f"/proc/{p.proc.pid}/status").read_text()
    rss = int(next(ln.split()[1] for ln in status_text.splitlines() if ln.startswith("VmRSS")))
    assert rss < 120_000, f"l4lb holds {rss} KB after streaming {size >> 20} MB"


def test_retries_go_elsewhere_but_not_for_post(proxy, http_backends):
    bad, good = http_backends("bad", "good")
    port = free_port()
    proxy(
        listener(port)
        + pool_toml("p", servers(bad, good), http={"retry_on": "[503]", "breaker_failures": 0})
    )
    assert [get(port, "/flaky")[0] for _ in range(6)] == [200] * 6
    posts = [get(port, "/flaky", "Content-Length: 0\r\n", method="POST")[0] for _ in range(6)]
    assert 503 in posts and 200 in posts


def test_dead_server_is_skipped(proxy, http_backends):
    (good,) = http_backends("good")
    port = free_port()
    dead = f'name = "dead"\naddress = "127.0.0.1:{free_port()}"'
    proxy(listener(port) + pool_toml("p", [dead, *servers(good)]))
    assert [get(port, "/")[2] for _ in range(4)] == [b"good\n"] * 4


def test_circuit_breaker_opens_and_recovers(proxy, http_backends):
    bad, good = http_backends("bad", "good")
    port = free_port()
    p = proxy(
        listener(port)
        + pool_toml(
            "p",
            servers(bad, good),
            http={"breaker_failures": 2, "breaker_cool_off": '"1s"', "breaker_half_open": 1},
        )
    )
    statuses = [get(port, "/flaky/500")[0] for _ in range(10)]
    assert statuses.count(500) == 2  # then bad's breaker is open: only good answers
    assert p.wait_log(r"server p/bad circuit open")
    time.sleep(1.2)
    statuses = [get(port, "/flaky/500")[0] for _ in range(6)]
    assert statuses.count(500) == 1  # one half-open trial, which fails and re-opens


def test_breaker_opens_on_connect_failures_and_recovers(proxy, http_backends):
    """Issue 17: a trial that ends in a refused connect must re-open the breaker, not keep
    its slot: once the server is back, requests reach it again (they used to get 503 for
    ever, with the view showing "open")."""
    port, flap_port = free_port(), free_port()
    flap = f'name = "flap"\naddress = "127.0.0.1:{flap_port}"'
    p = proxy(
        listener(port)
        + pool_toml(
            "p",
            [flap],
            retries=0,
            passive={"max_fails": 0},
            http={"breaker_failures": 2, "breaker_cool_off": '"1s"', "breaker_half_open": 1},
        )
    )
    assert [get(port, "/")[0] for _ in range(2)] == [502, 502]  # nothing listens yet
    assert p.wait_log(r"server p/flap circuit open")
    assert get(port, "/")[0] == 503  # open: no server available
    # The cool-off passes while the server still refuses: the trial gets 502 and re-opens.
    assert wait_until(lambda: get(port, "/")[0] == 502, timeout=10)
    assert p.wait_log(r"server p/flap circuit open \(a trial request failed\)")
    http_backends.add(HttpBackend("flap", flap_port))
    assert wait_until(lambda: get(port, "/")[0] == 200, timeout=10)
    assert p.wait_log(r"server p/flap circuit closed")
    assert [get(port, "/")[0] for _ in range(3)] == [200] * 3


def test_limits(proxy, http_backends):
    (a,) = http_backends("a")
    port = free_port()
    extra = (
        "[listener.web.http]\nmax_header_bytes = 4096\nmax_uri = 1024\n"
        'max_body = "1k"\nmax_requests = 2\n'
    )
    proxy(listener(port, extra=extra) + pool_toml("p", servers(a)))
    assert get(port, "/", "X-Big: " + "a" * 5000 + "\r\n")[0] == 431
    assert get(port, "/" + "u" * 2000)[0] == 414
    assert get(port, "/digest", "Content-Length: 5000\r\n", method="POST")[0] == 413
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(s)[1]["connection"] == "keep-alive"
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(s)[1]["connection"] == "close"
    assert a.requests == 2


@pytest.mark.parametrize(
    "raw",
    [
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\nX-B: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
    ],
    ids=[
        "cl-and-te",
        "two-cl",
        "bad-chunk",
        "obs-fold",
        "bare-lf",
        "bare-cr",
        "two-hosts",
        "no-host",
    ],
)
def test_smuggling_attempts_are_refused(proxy, http_backends, raw):
    (a,) = http_backends("a")
    port = free_port()
    proxy(listener(port) + pool_toml("p", servers(a)))
    status, headers, _ = exchange(port, raw)
    assert status == 400 and headers["connection"] == "close"
    assert a.requests == 0  # nothing ambiguous was forwarded
    assert get(port, "/")[0] == 200  # and the listener is fine


def test_timeouts(proxy, http_backends):
    (a,) = http_backends("a")
    port = free_port()
    proxy(
        listener(
            port, extra='[listener.web.http]\nheader_timeout = "500ms"\nbody_timeout = "500ms"\n'
        )
        + pool_toml("p", servers(a), http={"response_timeout": '"500ms"'})
    )
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finishes its head
        assert read_response(s)[0] == 408
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"POST /digest HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        assert read_response(s)[0] == 408  # the rest of the body never comes
    assert get(port, "/slow/2")[0] == 504
    dead_port = free_port()
    blackhole = socket.create_server(("127.0.0.1", dead_port), backlog=0)
    fillers = [socket.socket() for _ in range(4)]
    for f in fillers:  # fill the accept queue: further connects hang
        f.setblocking(False)
        f.connect_ex(("127.0.0.1", dead_port))
    try:
        port2 = free_port()
        proxy(
            f'[listener.w2]\nbind = "127.0.0.1:{port2}"\nprotocol = "http"\npool = "q"\n'
            + pool_toml(
                "q", [f'address = "127.0.0.1:{dead_port}"'], connect_timeout='"300ms"', retries=0
            )
        )
        assert get(port2, "/")[0] == 504  # connect timeout
    finally:
        for f in fillers:
            f.close()
        blackhole.close()


def test_websocket_through_the_proxy(proxy):
    ws = WsBackend()
    try:
        port = free_port()
        proxy(listener(port) + pool_toml("p", [f'address = "{ws.address}"']))
        from websockets.sync.client import connect

        big = os.urandom(1 << 20)
        with connect(f"ws://127.0.0.1:{port}/chat", max_size=None) as client:
            client.send("hello")
            assert client.recv(timeout=5) == "hello"
            client.send(big)
            assert client.recv(timeout=10) == big
            client.close()
            assert client.close_code == 1000
    finally:
        ws.close()


def test_curl_and_https_redirect(proxy, http_backends):
    (a,) = http_backends("a")
    port, port2 = free_port(), free_port()
    proxy(
        listener(port)
        + pool_toml("p", servers(a))
        + f'[listener.plain]\nbind = "127.0.0.1:{port2}"\nprotocol = "http"\npool = "p"\n'
        "[listener.plain.http]\nredirect_https = true\n"
    )
    out = subprocess.run(
        ["curl", "-sS", "-i", f"http://127.0.0.1:{port}/x"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0 and "HTTP/1.1 200 OK" in out.stdout and out.stdout.endswith("a\n")
    out = subprocess.run(
        ["curl", "-sS", "-i", "-H", "Host: shop.example", f"http://127.0.0.1:{port2}/cart?i=1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "301" in out.stdout.splitlines()[0]
    assert "location: https://shop.example/cart?i=1" in out.stdout.lower()


def test_pipelined_requests_are_answered_in_order(proxy, http_backends):
    (a,) = http_backends("a")
    port = free_port()
    proxy(listener(port) + pool_toml("p", servers(a)))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(
            b"GET /bytes/3 HTTP/1.1\r\nHost: x\r\n\r\nGET /bytes/5 HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        conn = h11.Connection(h11.CLIENT)
        for expected in (b"bbb", b"bbbbb"):
            conn.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
            conn.send(h11.EndOfMessage())
            body = b""
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(s.recv(65536))
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
            assert body == expected
            conn.start_next_cycle()


def test_access_log_line_per_request(proxy, http_backends):
    (a,) = http_backends("a")
    port = free_port()
    p = proxy(listener(port) + pool_toml("p", servers(a)))
    get(port, "/bytes/10", "X-Request-ID: req-77\r\n")
    assert wait_until(lambda: any("id=req-77" in line for line in p.access_lines()))
    line = next(line for line in p.access_lines() if "id=req-77" in line)
    assert '"GET example.com/bytes/10" 200 10 route=- server=p/a' in line
    assert "retries=0" in line


def test_many_clients_at_once(proxy, http_backends):
    a, b = http_backends("a", "b")
    port = free_port()
    proxy(listener(port) + pool_toml("p", servers(a, b)))
    assert keep_alive_clients(port, b"/", clients=8, requests=20) == [200] * 160


def keep_alive_clients(port: int, path: bytes, clients: int, requests: int) -> list[int]:
    """`clients` threads at once, each sending `requests` requests for `path` one after the
    other on its own keep-alive connection; the statuses, in the order they came."""
    results: list[int] = []

    def client() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            for _ in range(requests):
                s.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
                results.append(read_response(s)[0])

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def test_accept_proxy_on_http_listener(proxy, http_backends):
    (a,) = http_backends("a")
    port = free_port()
    proxy(listener(port, extra="accept_proxy = true") + pool_toml("p", servers(a)))
    raw = b"PROXY TCP4 203.0.113.9 192.0.2.1 5555 80\r\nGET /headers HTTP/1.1\r\nHost: x\r\n\r\n"
    status, _, body = exchange(port, raw)
    assert status == 200
    assert dict(json.loads(body)["headers"])["x-forwarded-for"] == "203.0.113.9"


def test_status_counts_requests_and_shows_open_circuits(proxy, http_backends):
    bad, good = http_backends("bad", "good")
    port, admin = free_port(), free_port()
    proxy(
        f'[admin]\nbind = "127.0.0.1:{admin}"\n'
        + listener(port)
        + pool_toml("p", servers(bad, good), http={"breaker_failures": 1})
    )
    for _ in range(4):
        get(port, "/flaky/500")

    def status() -> dict:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/status", timeout=5) as r:
            return json.loads(r.read())

    assert wait_until(lambda: status()["listeners"][0]["requests"] == 4, timeout=5)
    servers_state = {s["name"]: s["state"] for s in status()["pools"][0]["servers"]}
    assert servers_state == {"bad": "circuit_open", "good": "up"}


def test_expect_100_continue_is_answered_by_l4lb(proxy, http_backends):
    (a,) = http_backends("a")
    port = free_port()
    proxy(listener(port) + pool_toml("p", servers(a)))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(
            b"POST /headers HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"  # before any body byte
        s.sendall(b"hello")
        status, _, body = read_response(s)
    assert status == 200
    assert "expect" not in dict(json.loads(body)["headers"])


def test_close_delimited_response_is_relayed_whole(proxy):
    """A server that ends its body by closing (no Content-Length, no chunking)."""
    server = socket.create_server(("127.0.0.1", 0))
    body = b"x" * 300_000

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            while b"\r\n\r\n" not in conn.recv(65536):
                pass
            conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + body)

    threading.Thread(target=serve, daemon=True).start()
    port = free_port()
    proxy(listener(port) + pool_toml("p", [f'address = "127.0.0.1:{server.getsockname()[1]}"']))
    status, headers, got = get(port, "/")
    server.close()
    assert status == 200 and got == body
    assert headers.get("transfer-encoding") == "chunked"  # re-framed for the keep-alive client


def test_garbage_never_hurts_other_clients(proxy, http_backends):
    import random

    (a,) = http_backends("a")
    port = free_port()
    p = proxy(listener(port) + pool_toml("p", servers(a)))
    rng = random.Random(7)
    pieces = [
        b"GET ",
        b"POST ",
        b"/",
        b" HTTP/1.1",
        b"\r\n",
        b"\n",
        b"Host: x",
        b":",
        b" ",
        b"Content-Length: 3",
        b"Transfer-Encoding: chunked",
        b"0",
        b"ff",
        b"\x00",
        b"\xff\xfe",
        b"Connection: upgrade",
        b"Upgrade: websocket",
        b"a" * 100,
    ]
    for _ in range(150):
        junk = b"".join(rng.choice(pieces) for _ in range(rng.randint(1, 30)))
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(junk)
            s.shutdown(socket.SHUT_WR)
            s.settimeout(5)
            try:
                while s.recv(65536):
                    pass
            except OSError:
                pass
    assert p.proc.poll() is None
    assert get(port, "/")[0] == 200
    assert "Traceback" not in p.log() and "internal error" not in p.log()


def test_keepalive_connection_outlives_the_response_timeout(proxy, http_backends):
    """Regression: a finished GET once left its response timer armed, which cut the client's
    keep-alive connection one response_timeout later (and kept the exchange in memory)."""
    (a,) = http_backends("a")
    port = free_port()
    proxy(listener(port) + pool_toml("p", servers(a), http={"response_timeout": '"600ms"'}))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        for _ in range(2):  # the second one reuses the pooled server connection
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(s)[0] == 200
        time.sleep(1.0)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(s)[0] == 200


def test_deadlines_move_both_ways_on_a_keepalive_connection(proxy, http_backends):
    """Timers are lazy (a later deadline is only stored): a keep-alive connection idles past
    its first header timeout, and a second request's head that never ends still gets 408 one
    header_timeout after it began, not one keepalive_timeout later."""
    (a,) = http_backends("a")
    port = free_port()
    extra = '[listener.web.http]\nheader_timeout = "400ms"\nkeepalive_timeout = "30s"\n'
    proxy(listener(port, extra=extra) + pool_toml("p", servers(a)))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(s)[0] == 200
        time.sleep(0.8)  # past the first request's header deadline: the connection stays
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(s)[0] == 200
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # a head that never ends
        started = time.monotonic()
        assert read_response(s)[0] == 408
        assert time.monotonic() - started < 5  # the header timeout, not keepalive's 30 s


def test_idle_server_connections_close_after_idle_timeout(proxy, http_backends):
    """A pooled server connection is closed after the pool's idle_timeout without use, and
    one in use is not (its response deadline replaces the idle one)."""
    (a,) = http_backends("a")
    port = free_port()
    proxy(listener(port) + pool_toml("p", servers(a), http={"idle_timeout": '"500ms"'}))
    for _ in range(3):  # back to back: one server connection
        assert get(port, "/")[0] == 200
        time.sleep(0.2)
    assert a.accepted == 1
    time.sleep(1.2)  # idle past idle_timeout: closed, so the next request opens another
    assert get(port, "/")[0] == 200
    assert a.accepted == 2 and a.requests == 4


def test_bytes_after_a_response_retire_the_server_connection(proxy):
    """A server that sends more than the response it was asked for (RFC 9112 §9.3: it must
    not) has its connection dropped, so the extra bytes are never read as the next request's
    response."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted = []

    def handle(conn: socket.socket) -> None:
        with conn:
            answers = []
            if len(accepted) == 1:  # the first connection answers with bytes to spare
                answers.append(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n")
            while recv_head(conn) is not None:
                conn.sendall(
                    answers.pop()
                    if answers
                    else b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext"
                )

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            accepted.append(conn)
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    port = free_port()
    proxy(listener(port) + pool_toml("p", [f'address = "127.0.0.1:{server.getsockname()[1]}"']))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(s)[::2] == (200, b"ok")
            time.sleep(0.2)
            s.sendall(b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(s)[::2] == (200, b"next")
        assert len(accepted) == 2  # the first connection was not used again
    finally:
        server.close()


def test_keep_alive_pool_follows_the_concurrency_the_server_sees(proxy, http_backends):
    """More requests in flight than `max_idle`: the connections are reused, not closed and
    opened again after every response (the pool keeps as many as the recent peak)."""
    (a,) = http_backends("a")
    port = free_port()
    proxy(listener(port) + pool_toml("p", servers(a), http={"max_idle": 2}))
    assert keep_alive_clients(port, b"/slow/0.02", clients=8, requests=25) == [200] * 200
    # 8 clients need at most 8 server connections; a pool capped at 2 idle closed some after
    # each burst of answers and opened them again (15-25 connections here before).
    assert a.accepted <= 10, a.accepted
