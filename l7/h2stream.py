"""One request on an HTTP/2 connection: `H2Stream`, the exchange's `ClientStream` (l7/sides.py).

The connection (`l7.h2.H2Server`) turns `l7.h2conn` events into calls on its streams; a stream turns
the exchange's calls into h2 calls on the connection's `h2` object. What a stream holds is
its side of flow control: the response body that waits for the client's window (`out`,
bounded by `h2_stream_buffer`: over it, the server is paused), the request body bytes not yet
acknowledged while the exchange paused reading, and the time it has been stalled on a zero
window (the connection's timer resets it after `body_timeout`).

Writes are batched per read: while the connection is corked (inside `data_received`, or
from an upstream read to the end of that turn of the loop), `send_data` and `send_end` only queue
the stream on the connection, and `push` runs once when it uncorks, so a small response
leaves as HEADERS and one DATA with END_STREAM (as nginx sends it), not HEADERS, DATA and an
empty DATA, in one transport write.

A WebSocket over the stream (RFC 8441 extended CONNECT): after the server's 101 the stream
is a tunnel to that HTTP/1.1 connection (`peer`), its DATA under the same flow control.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from l4lb.errors import RemoteProtocolError
from l7 import h2events as ev
from l7.streams import StreamSide, head_fields, simple_fields, status_value

if TYPE_CHECKING:
    from l7.exchange import Exchange
    from l7.h2 import H2Server
    from l7.model import Response

__all__ = ["H2Stream"]

# Connection-specific fields of an HTTP/1.1 101 that have no place on a stream (RFC 9113
# §8.2.2), and the server's handshake answer, which an RFC 8441 client does not expect.
_NOT_ON_A_STREAM: Final = frozenset(
    {b"connection", b"upgrade", b"keep-alive", b"transfer-encoding", b"sec-websocket-accept"}
)
_CLOSED: Final = (ev.StreamClosedError, KeyError)


class H2Stream(StreamSide):
    """One request on an HTTP/2 connection: the exchange's client side."""

    __slots__ = (
        "end_sent",
        "ended",
        "out",
        "out_size",
        "paused",
        "peer",
        "queued",
        "stalled_since",
        "stream_id",
        "trailers",
        "unacked",
        "upstream_paused",
    )

    def __init__(self, conn: H2Server, stream_id: int) -> None:
        self.conn = conn
        self.version = "2"
        self.stream_id = stream_id
        self.ex = None
        self.out: list[bytes] = []  # response body waiting for the client's window
        self.out_size = 0
        self.ended = False  # the response is complete (END_STREAM to send when `out` is empty)
        self.end_sent = False
        self.queued = False  # on the connection's list of streams to push when it uncorks
        self.request_done = False
        self.paused = False  # the exchange asked to stop reading the request body
        self.unacked = 0  # request body bytes not yet acknowledged (while paused)
        self.upstream_paused = False
        self.stalled_since = 0.0
        self.trailers: list | None = None  # the response's, sent as HEADERS with END_STREAM
        self.peer: Any = None  # the server connection of a WebSocket tunnel (RFC 8441)

    # -- the response ------------------------------------------------------------------------

    def send_interim(self, ex: Exchange, response: Response) -> None:
        fields = [(b":status", status_value(response.status)), *response.fields()]
        self.conn.send_headers(self, fields, False)

    def send_head(self, ex: Exchange, response: Response) -> None:
        if response.status == 101:  # RFC 8441 §5: a 2xx, and the stream stays open
            fields = [(n, v) for n, v in head_fields(response) if n not in _NOT_ON_A_STREAM]
            self.conn.send_headers(self, [(b":status", b"200"), *fields[1:]], False)
            return
        if ex.framing != "none":
            ex.framing = "stream"
        end = ex.framing == "none"
        if end:
            self.ended = self.end_sent = True
        self.conn.send_headers(self, head_fields(response), end)

    def send_data(self, ex: Exchange, data: bytes) -> None:
        self.out.append(data)
        self.out_size += len(data)
        self.conn.flush_stream(self)

    def send_end(self, ex: Exchange) -> None:
        if not self.ended:
            self.ended = True
            self.trailers = ex.response_trailers
            self.conn.flush_stream(self)

    def send_simple(self, ex: Exchange, status: int, fields: list, body: bytes) -> None:
        head = simple_fields(status, fields)
        if body:
            self.conn.send_headers(self, head, False)
            self.out.append(body)
            self.out_size += len(body)
        else:
            self.end_sent = True
            self.conn.send_headers(self, head, True)
        self.ended = True
        self.conn.flush_stream(self)

    def push(self) -> None:
        """Hand the connection what the client's window allows, with END_STREAM (or the
        trailers) on the last of it; then the stall clock and the server's pause, by what is
        left. Writes nothing to the transport (the connection does, once per batch)."""
        conn = self.conn
        h2c = conn.h2
        sid = self.stream_id
        out = self.out
        sent = False
        try:
            while out:
                window = min(h2c.local_flow_control_window(sid), h2c.max_outbound_frame_size)
                if window <= 0:
                    break
                data = out[0]
                if len(data) <= window:
                    del out[0]
                else:
                    out[0] = data[window:]
                    data = data[:window]
                self.out_size -= len(data)
                sent = True
                last = self.ended and not out and self.trailers is None
                h2c.send_data(sid, data, last)
                if last:
                    self.end_sent = True
            if self.ended and not out and not self.end_sent:
                self.end_sent = True
                if self.trailers is None:
                    h2c.end_stream(sid)
                else:
                    h2c.send_headers(sid, self.trailers, True)
        except _CLOSED:
            self.out, self.out_size = [], 0
            self.end_sent = True
        # Bytes left waiting for the client's window, whatever their size, start (or, after
        # progress, restart) the stall clock: a small response behind a zero window must be
        # reset after body_timeout too, not hold the stream and the connection for ever.
        if not self.out:
            self.stalled_since = 0.0
        elif not self.stalled_since:
            self.stalled_since = conn.loop.time()
            conn.schedule(conn.settings.body_timeout)
        elif sent:
            self.stalled_since = conn.loop.time()
        ex = self.ex
        up = ex.upstream if ex is not None else None
        if self.out_size > conn.settings.h2_stream_buffer or conn.write_paused:
            if up is not None and not self.upstream_paused:
                up.pause_reading()
                self.upstream_paused = True
        else:
            if self.upstream_paused and up is not None:
                up.resume_reading()
            self.upstream_paused = False

    # -- the request, from the connection's events -------------------------------------------

    def received_data(self, data: bytes, length: int) -> None:
        """A DATA frame's bytes (`length`: what it counts for flow control, padding too):
        to the exchange or the tunnel, acknowledged unless the exchange paused reading."""
        ex = self.ex
        if ex is None or ex.finished:
            if length:
                self.conn.h2.acknowledge_received_data(length, self.stream_id)
            return
        try:
            if self.peer is not None:  # a WebSocket tunnel's bytes
                self.peer.write(data)
                ex.conn.touched = True
            elif data:
                ex.body_chunk(data)
        except RemoteProtocolError as exc:
            self.refuse(exc.status_hint, str(exc))
            return
        if self.paused:
            self.unacked += length
        elif length:
            self.acknowledge(length)

    def received_end(self) -> None:
        """The client's END_STREAM: the request body is complete (or the tunnel's way in)."""
        self.request_done = True
        ex = self.ex
        if self.peer is not None:
            self.tunnel_eof("client")
        elif ex is not None and not ex.finished:
            ex.body_complete()
        elif ex is not None:
            ex.body_done = True
        self.conn.maybe_forget(self)

    # -- flow control asked by the pipeline --------------------------------------------------

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        if self.paused:
            self.paused = False
            if self.unacked:
                n, self.unacked = self.unacked, 0
                self.acknowledge(n)

    def acknowledge(self, n: int) -> None:
        """Give the client `n` bytes of window back (WINDOW_UPDATE once half a window is owed)."""
        conn = self.conn
        try:
            conn.h2.acknowledge_received_data(n, self.stream_id)
        except ev.StreamClosedError:
            return
        if not conn.corked:
            conn.flush()

    def abort(self) -> None:
        self.conn.reset(self, ev.INTERNAL_ERROR)

    # -- a WebSocket tunnel: extended CONNECT (RFC 8441) to an HTTP/1.1 upgrade --------------

    def tunnel(self, upstream: Any, pending: bytes) -> None:
        if upstream is None:
            self.abort()
            return
        self.peer = upstream
        if pending:
            upstream.write(pending)

    def write(self, data: bytes) -> None:
        """The server's tunnel bytes, as DATA within the client's window (the server is no
        longer read while more than `h2_stream_buffer` waits, as for a response body)."""
        self.out.append(data)
        self.out_size += len(data)
        self.conn.flush_stream(self)

    def tunnel_eof(self, side: str) -> None:
        """One way of the tunnel ended: the client's END_STREAM goes to the server as EOF
        (when its transport can half-close), the server's EOF ends the stream after what is
        buffered; once both have ended, or a side cannot half-close, the tunnel ends."""
        peer = self.peer
        if peer is None:
            return
        if side == "client":
            transport = peer.transport
            if not self.ended and transport is not None and transport.can_write_eof():
                transport.write_eof()
                return
        else:
            self.ended = True
            self.conn.flush_stream(self)
            if not self.request_done:
                return
        self.end_tunnel()

    def end_tunnel(self) -> None:
        peer, self.peer = self.peer, None
        if peer is None:
            return
        if not self.ended:
            self.ended = True
            self.conn.flush_stream(self)
        if self.ex is not None:
            self.ex.tunnel_closed()
        peer.close()

    def cancel(self) -> None:
        self.conn.reset(self, ev.CANCEL)

    def exchange_done(self, ex: Exchange) -> None:
        self.conn.maybe_forget(self)
