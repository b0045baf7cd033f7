"""Reloads and shutdowns never reset an HTTP client: what is in flight finishes, idle
keep-alive connections get a grace period, and the next request after a reload uses the new
config on the same connection."""

from __future__ import annotations

import signal
import socket
import threading

from tests.e2e.helpers import free_port, pool_toml
from tests.e2e.test_http import listener, read_response, servers


def ask(s: socket.socket, path: str = "/") -> tuple[int, dict, bytes]:
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return read_response(s)


def test_reload_reaches_open_keepalive_connections(proxy, http_backends):
    a, b = http_backends("a", "b")
    port = free_port()
    p = proxy(listener(port) + pool_toml("p", servers(a)))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        assert ask(s)[2] == b"a\n"
        assert p.reload(listener(port) + pool_toml("p", servers(b)))
        status, headers, body = ask(s)  # the same connection, the new config
        assert (status, body, headers["connection"]) == (200, b"b\n", "keep-alive")


def test_shutdown_finishes_in_flight_and_spares_racing_requests(proxy, http_backends):
    (a,) = http_backends("a")
    port = free_port()
    p = proxy('[global]\ndrain_timeout = "10s"\n' + listener(port) + pool_toml("p", servers(a)))
    busy = socket.create_connection(("127.0.0.1", port), timeout=10)
    idle = socket.create_connection(("127.0.0.1", port), timeout=10)
    assert ask(idle)[0] == 200  # now idle, kept alive
    result: list = []
    t = threading.Thread(target=lambda: result.append(ask(busy, "/slow/1")))
    t.start()
    while a.requests < 2:
        pass
    p.proc.send_signal(signal.SIGTERM)
    assert p.wait_log("draining")
    status, headers, _ = ask(idle)  # races the shutdown: answered, not reset
    assert status == 200 and headers["connection"] == "close"
    t.join(10)
    status, headers, _ = result[0]
    assert status == 200 and headers["connection"] == "close"
    assert p.proc.wait(15) == 0
    busy.close()
    idle.close()
