"""Closed connections give their descriptors back at once, not after `idle_timeout`.

Each test counts the open descriptors of the l4lb process (/proc/PID/fd) before and after
traffic: a connection whose two sides have both closed must hold none of them, on every kind
of relay (the WebSocket tunnel after a 101, the TCP splice relay, the TLS relays).
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import threading

import pytest

from tests.e2e.helpers import free_port, make_cert, pool_toml, recv_head, wait_until
from tests.e2e.httpbackend import WsBackend

CONNECTIONS = 1000


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def settled_fds(pid: int) -> int:
    """The descriptor count once it stops moving (a closing connection may still be on its
    way out when the test looks)."""
    counts = [open_fds(pid)]

    def steady() -> bool:
        counts.append(open_fds(pid))
        return counts[-1] == counts[-2]

    wait_until(steady, timeout=5, interval=0.1)
    return counts[-1]


def back_to(pid: int, baseline: int) -> bool:
    return wait_until(lambda: open_fds(pid) <= baseline, timeout=10, interval=0.1)


# -- the WebSocket tunnel ----------------------------------------------------------------------


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
@pytest.mark.parametrize("parser", ["httptools", "h11"])
def test_closed_websocket_is_released_and_logged_at_once(proxy, loop, parser):
    from websockets.sync.client import connect

    ws = WsBackend()
    try:
        port = free_port()
        config = (
            '[global]\ndrain_timeout = "60s"\n'
            f'[listener.web]\nbind = "127.0.0.1:{port}"\nprotocol = "http"\npool = "p"\n'
            f'idle_timeout = "5m"\n[listener.web.http]\nparser = "{parser}"\n'
            + pool_toml("p", [f'address = "{ws.address}"'])
        )
        p = proxy(config, loop=loop)
        pid = p.proc.pid
        with connect(f"ws://127.0.0.1:{port}/chat/first") as client:
            client.send("warm")  # the first connection opens a /dev/null once (uvloop)
            assert client.recv(timeout=5) == "warm"
        baseline = settled_fds(pid)
        for i in range(5):
            with connect(f"ws://127.0.0.1:{port}/chat/{i}") as client:
                client.send(f"hello {i}")
                assert client.recv(timeout=5) == f"hello {i}"
            assert client.close_code == 1000
        # Both sides closed: the tunnels' descriptors are gone, and each 101 is logged,
        # long before the listener's idle_timeout (5 minutes).
        assert back_to(pid, baseline), f"{open_fds(pid)} descriptors open, {baseline} before"

        def logged() -> bool:
            return len(re.findall(r'"GET \S*/chat/\d" 101 ', p.log())) == 5

        assert wait_until(logged, timeout=10), p.log()
        # Nothing left to drain: SIGTERM ends the process well inside drain_timeout (60 s).
        assert p.stop(timeout=15) == 0
    finally:
        ws.close()


# -- a server and a client that end connections each way ----------------------------------------


LINGER_ZERO = b"\x01\0\0\0\0\0\0\0"  # struct linger {on, 0 s}: close() sends a reset
ENDINGS = ("client_close", "server_close", "client_reset", "server_reset")
UPGRADE = (
    b"GET /tunnel HTTP/1.1\r\nHost: relay.test\r\nConnection: Upgrade\r\n"
    b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
)
SWITCHING = (
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
)


class EchoBackend:
    """A TCP (or TLS) server in one thread, one connection at a time (the test's are
    sequential): sends a name line, echoes; `bye` makes it close first, `rst` reset."""

    def __init__(self, tls: ssl.SSLContext | None = None, upgrade: bool = False) -> None:
        self.tls = tls
        self.upgrade = upgrade  # answer a request head with 101 first, then as above
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                conn.settimeout(5)
                # (without it, TLS 1.3's session tickets and the name line meet Nagle and
                # delayed ACKs: 40 ms a connection)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self.tls is not None:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                if self.upgrade:
                    if recv_head(conn) is None:
                        continue
                    conn.sendall(SWITCHING)
                conn.sendall(b"hi\n")
                while data := conn.recv(65536):
                    if data == b"rst":
                        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO)
                        break
                    if data == b"bye":
                        break
                    conn.sendall(data)
            except (OSError, ssl.SSLError):
                pass
            finally:
                conn.close()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self.sock.close()


def talk(port: int, tls: ssl.SSLContext | None, ending: str, upgrade: bool = False) -> None:
    """One connection through l4lb (with `upgrade`, a WebSocket upgrade first): the name
    line, one echo, then the end `ending` names (one of ENDINGS)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock = raw if tls is None else tls.wrap_socket(raw, server_hostname="relay.test")
    with sock:
        data = b""
        if upgrade:
            sock.sendall(UPGRADE)
        while not data.endswith(b"hi\n"):
            chunk = sock.recv(100)
            assert chunk, "closed before the name line"
            data += chunk
        sock.sendall(b"ping")
        got = b""
        while len(got) < 4:
            chunk = sock.recv(100)
            assert chunk, "closed before the echo"
            got += chunk
        assert got == b"ping"
        if ending == "client_reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO)
        elif ending in ("server_close", "server_reset"):
            sock.sendall(b"bye" if ending == "server_close" else b"rst")
            try:
                while sock.recv(100):  # until l4lb passes the server's end on
                    pass
            except (ConnectionResetError, ssl.SSLError):
                pass


def client_context(cert: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=cert)


def server_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


# -- the tunnel after a 101, each way it can end ------------------------------------------------


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
@pytest.mark.parametrize("protocol", ["http", "https"])
def test_every_end_of_a_tunnel_releases_it(proxy, tmp_path, protocol, loop):
    """After a 101, whichever side ends first, cleanly or with a reset, both descriptors go
    and the 101 is logged (the HTTP listener's tunnel, on plain TCP and behind TLS)."""
    cert, key = make_cert(tmp_path, "relay.test")
    backend = EchoBackend(upgrade=True)
    try:
        port = free_port()
        config = (
            f'[listener.web]\nbind = "127.0.0.1:{port}"\nprotocol = "{protocol}"\n'
            'pool = "p"\nidle_timeout = "5m"\n'
        )
        if protocol == "https":
            config += f'[[listener.web.certs]]\ncert = "{cert}"\nkey = "{key}"\n'
        config += pool_toml("p", [f'address = "{backend.address}"'])
        p = proxy(config, loop=loop)
        pid = p.proc.pid
        tls = client_context(cert) if protocol == "https" else None
        talk(port, tls, "client_close", upgrade=True)
        baseline = settled_fds(pid)
        tunnels = 200
        for i in range(tunnels):
            talk(port, tls, ENDINGS[i % len(ENDINGS)], upgrade=True)
        assert back_to(pid, baseline), f"{open_fds(pid)} descriptors open, {baseline} before"

        def logged() -> bool:
            return len(re.findall(r'"GET \S*/tunnel" 101 ', p.log())) == tunnels + 1

        assert wait_until(logged, timeout=10), p.access_lines()[-3:]
    finally:
        backend.close()


# -- the L4 relays -----------------------------------------------------------------------------


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
@pytest.mark.parametrize("protocol", ["tcp", "tls", "tls-passthrough"])
def test_a_thousand_closed_connections_leave_no_descriptor(proxy, tmp_path, protocol, loop):
    """The TCP splice relay (tcp, tls-passthrough) and the TLS relay (tls) close both sockets
    as soon as both ways have ended, or one side reset."""
    cert, key = make_cert(tmp_path, "relay.test")
    backend_tls = server_context(cert, key) if protocol == "tls-passthrough" else None
    backend = EchoBackend(backend_tls)
    try:
        port = free_port()
        config = (
            f'[listener.l]\nbind = "127.0.0.1:{port}"\nprotocol = "{protocol}"\npool = "p"\n'
            'idle_timeout = "5m"\n'
        )
        if protocol == "tls":
            config += f'[[listener.l.certs]]\ncert = "{cert}"\nkey = "{key}"\n'
        config += pool_toml("p", [f'address = "{backend.address}"'])
        p = proxy(config, loop=loop)
        pid = p.proc.pid
        tls = client_context(cert) if protocol != "tcp" else None
        talk(port, tls, "client_close")  # the first connection fills the caches (pipes)
        baseline = settled_fds(pid)
        for i in range(CONNECTIONS):
            talk(port, tls, ENDINGS[i % len(ENDINGS)])
        assert back_to(pid, baseline), f"{open_fds(pid)} descriptors open, {baseline} before"

        def logged() -> bool:  # (the log is written by another process: may lag)
            return len(p.access_lines()) == CONNECTIONS + 1

        assert wait_until(logged, timeout=10), f"{len(p.access_lines())} connections logged"
    finally:
        backend.close()
