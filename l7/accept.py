"""Which HTTP adapter serves a new client connection: HTTP/2 or HTTP/1.1.

On `https` the TLS handshake has chosen (ALPN: `h2` or `http/1.1`; a client that offers
neither gets HTTP/1.1). On `http` with `h2c = true`, a connection whose first bytes are the
HTTP/2 preface is HTTP/2 with prior knowledge (RFC 9113 §3.3); anything else is HTTP/1.1.
`Upgrade: h2c` is never honoured (RFC 9113 dropped it, and a proxy that follows it can be
tunnelled past: docs/CONFIG.md). The chosen adapter takes over the transport; this object
only forwards the listener's drain and abort to it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from l7.h1 import H1Server
from l7.h2 import H2_PREFACE, H2Server

__all__ = ["HttpAccept"]


class HttpAccept(asyncio.Protocol):
    def __init__(self, engine_of, client: tuple[str, int], on_close, h2c: bool) -> None:
        self.engine_of = engine_of
        self.client = client
        self.on_close = on_close
        self.h2c = h2c
        self.chosen: Any = None
        self.transport: asyncio.Transport | None = None
        self.seen = b""
        self.pending_drain: float | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            h2 = ssl_object.selected_alpn_protocol() == "h2"
            self.choose(H2Server if h2 else H1Server, b"")
        elif not self.h2c:
            self.choose(H1Server, b"")

    def data_received(self, data: bytes) -> None:
        # Only with h2c, before the choice: is this the HTTP/2 preface?
        seen = self.seen + data
        if H2_PREFACE.startswith(seen[: len(H2_PREFACE)]) and len(seen) < len(H2_PREFACE):
            self.seen = seen
            return
        self.seen = b""
        self.choose(H2Server if seen.startswith(H2_PREFACE) else H1Server, seen)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.chosen is None and self.on_close is not None:
            self.on_close(self)

    def choose(self, kind: Any, first: bytes) -> None:
        transport = self.transport
        assert transport is not None
        proto = self.chosen = kind(self.engine_of, self.client, self.on_close)
        self.transport = None  # the adapter owns it now
        transport.set_protocol(proto)
        proto.connection_made(transport)
        if first:
            proto.data_received(first)
        if self.pending_drain is not None:
            proto.drain(self.pending_drain)

    # -- the listener's handles --------------------------------------------------------------

    def drain(self, grace: float) -> None:
        if self.chosen is not None:
            self.chosen.drain(grace)
        elif self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.chosen is not None:
            self.chosen.abort()
        elif self.transport is not None:
            self.transport.abort()
