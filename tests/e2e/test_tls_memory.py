"""A closed TLS connection gives back its TLS state at once, not when the collector runs.

Each terminated connection's transport holds the SSL object, its BIOs and the TLS protocol's
read buffer (uvloop keeps 256 KiB per connection). The session, its relay and the relay's two
sides refer to each other, so if a side kept its transport after the connection was lost, all
that memory waited for a garbage collection that finds the cycle: some 400 closed connections,
about 120 MB, under a handshake benchmark (RSS 43 -> 158 MB over 40,000 handshakes, 53 MB
once fixed). With the collector off, no SSLObject may outlive its session.
"""

from __future__ import annotations

import gc
import io
import socket
import ssl
from pathlib import Path

import anyio
import pytest

from l4lb.accesslog import AccessLog
from l4lb.config import load
from l4lb.runtime import Runtime
from tests.e2e.helpers import Backend, free_port, make_cert, pool_toml
from tests.e2e.httpbackend import HttpBackend

CONNECTIONS = 20


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {}), id="asyncio"),
        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
    ]
)
def anyio_backend(request):
    if request.param[1].get("use_uvloop"):
        pytest.importorskip("uvloop")
    return request.param


def connect_and_close(port: int, cafile: str, count: int) -> None:
    """`count` TLS connections through the listener: handshake, a line each way, close."""
    ctx = ssl.create_default_context(cafile=cafile)
    for _ in range(count):
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        with ctx.wrap_socket(raw, server_hostname="a.test") as tls:
            assert tls.recv(100) == b"b\n"
            tls.sendall(b"ping")
            assert tls.recv(100) == b"ping"


def ssl_objects() -> int:
    return sum(isinstance(o, ssl.SSLObject) for o in gc.get_objects())


async def tls_state_left(tmp_path: Path, protocol: str, pool: str, client) -> int:
    """Run a `protocol` listener (certificate for a.test) in front of `pool` (TOML of a pool
    named p), let `client(port, cafile, CONNECTIONS)` connect and close, and count the
    SSLObjects still alive once every session has ended, with the collector off."""
    cert, key = make_cert(tmp_path, "a.test")
    port = free_port()
    path = tmp_path / "l4lb.toml"
    path.write_text(
        f'[listener.t]\nbind = "127.0.0.1:{port}"\nprotocol = "{protocol}"\npool = "p"\n'
        f'[[listener.t.certs]]\ncert = "{cert}"\nkey = "{key}"\n' + pool
    )
    access_log = AccessLog("text", io.StringIO())
    access_log.enabled = False
    runtime = Runtime(load(path), access_log)
    async with anyio.create_task_group() as tg:
        tg.start_soon(runtime.run)
        with anyio.fail_after(5):
            while not runtime.listeners:
                await anyio.sleep(0.01)
        listener = runtime.listeners["t"]
        gc.disable()  # what is freed now is freed by reference counting alone
        try:
            before = ssl_objects()
            await anyio.to_thread.run_sync(client, port, cert, CONNECTIONS)
            with anyio.fail_after(10):
                while listener.sessions:
                    await anyio.sleep(0.01)
            left = ssl_objects() - before
        finally:
            gc.enable()
        runtime.stop()
    return left


@pytest.mark.anyio
async def test_closed_tls_connections_hold_no_tls_state(tmp_path: Path):
    backend = Backend("b")
    try:
        left = await tls_state_left(tmp_path, "tls", pool_toml("p", [backend]), connect_and_close)
    finally:
        backend.stop()
    assert left == 0, f"{left} of {CONNECTIONS} closed TLS connections still held"


def get_and_close(port: int, cafile: str, count: int) -> None:
    """`count` HTTPS connections: handshake, one keep-alive request, close."""
    ctx = ssl.create_default_context(cafile=cafile)
    for _ in range(count):
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        with ctx.wrap_socket(raw, server_hostname="a.test") as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
            data = b""
            while b"\r\n\r\n" not in data:
                data += tls.recv(65536)
            assert data.startswith(b"HTTP/1.1 200 ")


@pytest.mark.anyio
async def test_closed_https_connections_hold_no_tls_state(tmp_path: Path):
    """The same for the HTTP adapter: its parser refers back to it, so a closed H1Server is
    in a cycle too, and must not keep its TLS transport in it."""
    backend = HttpBackend("h")
    try:
        pool = pool_toml("p", [f'address = "{backend.address}"'])
        left = await tls_state_left(tmp_path, "https", pool, get_and_close)
    finally:
        backend.close()
    assert left == 0, f"{left} of {CONNECTIONS} closed HTTPS connections still held"
