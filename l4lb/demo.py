"""Built-in demo backends, so that `l4lb up configs/site.toml` shows balancing on a bare machine.

Each backend listens on loopback and names itself. A client that speaks HTTP first
(`curl http://127.0.0.1:8080/`) gets a small HTTP/1.0 response; a client that says nothing
for a moment (`nc 127.0.0.1 8080`) gets a greeting line and then an echo of what it sends.
"""

from __future__ import annotations

import asyncio
import re

from l4lb.config.schema import DemoBackend

__all__ = ["DemoProtocol", "start_demo_backends"]

_HTTP_METHOD = re.compile(rb"^[A-Z]{3,7} ")
_GREETING_DELAY = 0.3  # seconds of client silence before the plain-TCP greeting


class DemoProtocol(asyncio.Protocol):
    def __init__(self, backend: DemoBackend) -> None:
        self.backend = backend
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.mode = ""  # "", "http" or "echo"
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.timer = asyncio.get_running_loop().call_later(_GREETING_DELAY, self._greet)

    def _line(self) -> bytes:
        return f"{self.backend.name} at {self.backend.address}\n".encode()

    def _greet(self) -> None:
        if not self.mode and self.transport is not None:
            self.mode = "echo"
            self.transport.write(self._line())

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if self.mode == "echo":
            self.transport.write(data)
            return
        self.buffer += data
        if not self.mode:
            if self.timer is not None:
                self.timer.cancel()
            if _HTTP_METHOD.match(self.buffer) or (len(self.buffer) < 8 and self.buffer.isupper()):
                self.mode = "http"
            else:
                self.mode = "echo"
                self.transport.write(self._line() + self.buffer)
                self.buffer = b""
                return
        if b"\r\n\r\n" in self.buffer or b"\n\n" in self.buffer or len(self.buffer) > 65536:
            body = self._line()
            head = (
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n"
                f"Content-Length: {len(body)}\r\nX-Served-By: {self.backend.name}\r\n"
                "Connection: close\r\n\r\n"
            ).encode()
            self.transport.write(head + body)
            self.transport.close()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()


async def start_demo_backends(backends: tuple[DemoBackend, ...]) -> list[asyncio.Server]:
    """Start every demo backend; the caller closes the returned servers."""
    loop = asyncio.get_running_loop()
    servers = []
    for backend in backends:
        addr = backend.address
        server = await loop.create_server(
            lambda b=backend: DemoProtocol(b), addr.host, addr.port, reuse_address=True
        )
        servers.append(server)
    return servers
