"""The relay for connections where either side speaks TLS through l4lb: two asyncio transports.

`relay.Relay` splices plain sockets in the kernel; once l4lb terminates TLS (a `tls` listener)
or originates it (a pool with `[pool.NAME.tls]`), bytes must pass through Python, and the
loop's transports (uvloop's when installed) do the TLS work. This relay connects two
`asyncio.Protocol` sides: what one receives the other writes; when a transport's write buffer
passes its high-water mark, the other side stops reading until it drains (backpressure); EOF
is passed on with `write_eof` where the transport can half-close, and as a close after the
buffered bytes are flushed where it cannot (TLS). It has the same surface as `Relay`
(`touched`, `bytes_in`, `bytes_out`, `close(how)`, `on_done(relay, how)`), so a session and
the idle sweep treat both alike.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["Side", "StreamRelay"]


class Side(asyncio.Protocol):
    """One end of a StreamRelay. `name` is "client" or "server"."""

    def __init__(self, relay: StreamRelay, name: str) -> None:
        self.relay = relay
        self.name = name
        self.transport: asyncio.Transport | None = None
        self.peer: Side | None = None
        self.moved = 0
        self.eof = False
        self.lost = False
        self.paused = False  # reading paused until the relay starts

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.paused:
            self.transport.pause_reading()  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        self.relay.touched = True
        self.moved += len(data)
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.lost:
            peer.transport.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        relay = self.relay
        if not relay.first_end:
            relay.first_end = f"{self.name}_close"
        peer = self.peer
        if peer is None or peer.transport is None or peer.lost:
            return False
        if peer.eof or not peer.transport.can_write_eof():
            peer.transport.close()  # flushes what is buffered, then closes
            return False
        peer.transport.write_eof()
        return True  # keep our transport open: the other direction may still flow

    def pause_writing(self) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.lost:
            peer.transport.pause_reading()

    def resume_writing(self) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.lost:
            peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        relay = self.relay
        if not relay.first_end:
            relay.first_end = f"{self.name}_{'reset' if exc else 'close'}"
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.lost:
            peer.transport.close()
        relay.side_lost()
        # Let go of the transport now: with TLS it holds the SSL object, the BIOs and the
        # TLS protocol's read buffer (about 300 KB a connection with uvloop, which keeps a
        # 256 KiB one), and this side, its peer, the relay and the session form reference
        # cycles that only the garbage collector would free, hundreds of connections later.
        self.transport = None


class StreamRelay:
    """Relay bytes between a client Side and a server Side until both are closed."""

    def __init__(self, on_done: Callable[[StreamRelay, str], None] | None = None) -> None:
        self.client = Side(self, "client")
        self.server = Side(self, "server")
        self.client.peer = self.server
        self.server.peer = self.client
        self.client.paused = True
        self.on_done = on_done
        self.first_end = ""
        self.touched = True
        self.closed = False

    @property
    def bytes_in(self) -> int:
        return self.client.moved

    @property
    def bytes_out(self) -> int:
        return self.server.moved

    def start(self, on_done: Callable[[StreamRelay, str], None]) -> None:
        """Both sides are connected: let the client's bytes flow, and report the end."""
        self.on_done = on_done
        self.client.paused = False
        if self.client.transport is not None and not self.client.lost:
            self.client.transport.resume_reading()

    def side_lost(self) -> None:
        sides = (self.client, self.server)
        if self.on_done is None or self.closed:
            return  # not started: the session handles its own failures
        if all(s.lost or s.transport is None for s in sides):
            self.closed = True
            self.on_done(self, self.first_end or "closed")

    def close(self, how: str) -> None:
        """End now (idle timeout, shutdown): abort both transports, which report back. Abort,
        not close: a peer that stopped reading would otherwise hold the flush forever."""
        if not self.first_end:
            self.first_end = how
        for side in (self.client, self.server):
            if side.transport is not None and not side.lost:
                side.transport.abort()
        self.side_lost()
