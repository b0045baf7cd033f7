"""The HTTP/2 adapter on the client side: h2 events to `Request` and exchanges, and back.

One `H2Server` per connection (an `https` listener that negotiated ALPN `h2`, or an `http`
listener with `h2c = true` and the client's prior knowledge); one `H2Stream` per request,
which is the exchange's `ClientStream` (l7/sides.py). Each stream goes through the same
pipeline as an HTTP/1.1 request, concurrently with the others on its connection. The
python-hyper `h2` library does the framing, HPACK, the stream state machines and most of
RFC 9113's validation (pseudo-header rules, connection-specific fields, Content-Length
against DATA, CONTINUATION backlog, HPACK bombs through the header list size); a violation
it finds ends the connection with GOAWAY carrying its error code, before the stream is handed
to the pipeline, so nothing of it is forwarded.

What h2 does not do, done here (defences.py holds the counting, sans-IO):
- Rapid reset (CVE-2023-44487) and control-frame floods (SETTINGS, PING, PRIORITY,
  WINDOW_UPDATE, empty DATA): counted per connection in a sliding window; over the limit,
  GOAWAY ENHANCE_YOUR_CALM and close, as nginx and Envoy do.
- Flow control both ways with bounded memory: a stream's request body is acknowledged
  (WINDOW_UPDATE) only once the exchange took it, so a slow server stalls that stream's
  client, not the connection; a response body waits in a per-stream buffer while the
  client's window is closed, and the server is paused once that buffer is over
  `h2_stream_buffer`. A stream that stays blocked on a zero window longer than
  `body_timeout` is reset.
- `:authority` and `host`: one authority (RFC 9113 §8.3.1): h2 refuses a request where both
  are present and differ (GOAWAY PROTOCOL_ERROR, before `request` sees it; the 400 there is
  a second line); the server gets `Host: <authority>`.
- WebSocket over a stream (RFC 8441 extended CONNECT), when the listener allows WebSocket:
  `l7.streams` turns the request into the HTTP/1.1 upgrade a server expects; after its 101
  the stream is a tunnel (`H2Stream.tunnel`), its DATA within the same flow control.
- Graceful GOAWAY at reload and shutdown: the frame is written by hand (h2's close_connection
  would stop the streams in flight), streams after it are refused, the connection closes
  when the last one is done or after the grace period.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from hyperframe.frame import GoAwayFrame

from l4lb.errors import RemoteProtocolError
from l7.defences import FloodGuard
from l7.streams import (
    StreamSide,
    head_fields,
    simple_fields,
    status_value,
)

if TYPE_CHECKING:
    from l7.exchange import Exchange
    from l7.model import Response

__all__ = ["H2_PREFACE", "H2Server", "H2Stream"]

log = logging.getLogger("l4lb")

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# Connection-specific fields of an HTTP/1.1 101 that have no place on a stream (RFC 9113
# §8.2.2), and the server's handshake answer, which an RFC 8441 client does not expect.
_NOT_ON_A_STREAM = frozenset(
    {b"connection", b"upgrade", b"keep-alive", b"transfer-encoding", b"sec-websocket-accept"}
)
_CALM = h2.errors.ErrorCodes.ENHANCE_YOUR_CALM


class H2Stream(StreamSide):
    """One request on an HTTP/2 connection: the exchange's client side."""

    version = "2"

    __slots__ = (
        "conn",
        "end_sent",
        "ended",
        "ex",
        "out",
        "out_size",
        "paused",
        "peer",
        "request_done",
        "stalled_since",
        "stream_id",
        "trailers",
        "unacked",
        "upstream_paused",
    )

    def __init__(self, conn: H2Server, stream_id: int) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.ex: Exchange | None = None
        self.out: list[bytes] = []  # response body waiting for the client's window
        self.out_size = 0
        self.ended = False  # the response is complete (END_STREAM to send when `out` is empty)
        self.end_sent = False
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

    # -- flow control asked by the pipeline --------------------------------------------------

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        if self.paused:
            self.paused = False
            if self.unacked:
                n, self.unacked = self.unacked, 0
                self.conn.acknowledge(self, n)

    def abort(self) -> None:
        self.conn.reset(self, h2.errors.ErrorCodes.INTERNAL_ERROR)

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
        self.conn.reset(self, h2.errors.ErrorCodes.CANCEL)

    def exchange_done(self, ex: Exchange) -> None:
        self.conn.stream_done(self)


class H2Server(asyncio.Protocol):
    """One HTTP/2 client connection. `engine_of()` returns the listener's current engine."""

    def __init__(self, engine_of, client: tuple[str, int], on_close=None) -> None:
        self.engine_of = engine_of
        self.client = client
        self.on_close = on_close
        engine = engine_of()
        settings = engine.settings
        self.settings = settings
        config = h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        self.h2 = h2.connection.H2Connection(config)
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: settings.h2_max_streams,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: settings.max_header_bytes,
                h2.settings.SettingCodes.HEADER_TABLE_SIZE: settings.h2_header_table_size,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: settings.h2_window,
                # RFC 8441: WebSocket over a stream, when the listener allows WebSocket.
                h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL: int(
                    "websocket" in engine.upgrades
                ),
            },
        )
        self.h2.decoder.max_header_list_size = settings.max_header_bytes
        self.h2.decoder.max_allowed_table_size = settings.h2_header_table_size
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, H2Stream] = {}
        self.forwarding: tuple[Any, bytes, bytes] = (None, b"", b"")
        self.guard = FloodGuard(settings.h2_max_resets, settings.h2_max_control, 10.0)
        self.corked = 0
        self.closed = False
        self.gone = False  # calm() sent its GOAWAY: the rest of the frames read are dropped
        self.draining = False
        self.goaway_sent = False
        self.last_stream = 0
        self.write_paused = False
        self.loop = asyncio.get_event_loop()
        self.timer: asyncio.TimerHandle | None = None
        self.listener = engine.listener

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.h2.initiate_connection()
        # h2 takes a stream over SETTINGS_MAX_CONCURRENT_STREAMS for a connection error, which
        # cuts every stream in flight, though RFC 9113 §5.1.2 asks for a stream error (a client
        # may open streams before it read our SETTINGS). So h2 holds a higher hard cap, and
        # `request` refuses streams over the advertised limit with REFUSED_STREAM, as nginx.
        values = dict(self.h2.local_settings)
        values[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = self.settings.h2_max_streams + 100
        self.h2.local_settings = h2.settings.Settings(client=False, initial_values=values)
        # A bigger connection window than the 64 KiB default: streams share it.
        self.h2.increment_flow_control_window(self.settings.h2_window * 4)
        self.flush()
        if self.listener is not None:
            self.listener.h2_connections += 1
        self.schedule(self.settings.keepalive_timeout)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            log.info("http2 %s:%d: %s", self.client[0], self.client[1], exc)
            self.goaway_count()
            self.flush()  # h2 queued a GOAWAY with the error code
            self.close()
            return
        self.corked += 1
        try:
            for event in events:
                if self.gone:
                    break
                self.event(event)
        except Exception:  # a bug: it costs this connection, logged, and nothing else
            log.exception("http2 %s:%d: internal error", self.client[0], self.client[1])
            self.calm("internal error", h2.errors.ErrorCodes.INTERNAL_ERROR)
        finally:
            self.corked -= 1
        if not self.closed:
            self.flush()

    def pause_writing(self) -> None:
        self.write_paused = True
        for stream in self.streams.values():
            ex = stream.ex
            if ex is not None and ex.upstream is not None and not stream.upstream_paused:
                ex.upstream.pause_reading()
                stream.upstream_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        for stream in list(self.streams.values()):
            self.flush_stream(stream)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            if stream.ex is not None and not stream.ex.finished:
                stream.ex.abort()
        self.transport = None
        if self.on_close is not None:
            self.on_close(self)

    # -- h2 events ---------------------------------------------------------------------------

    def event(self, event: Any) -> None:
        guard, now = self.guard, self.loop.time()
        if isinstance(event, h2.events.RequestReceived):
            self.request(event)
        elif isinstance(event, h2.events.DataReceived):
            stream = self.streams.get(event.stream_id)
            if not event.data and not event.stream_ended and guard.control(now):
                self.calm("empty DATA frames")
                return
            if stream is None or stream.ex is None or stream.ex.finished:
                if event.flow_controlled_length:
                    self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                return
            try:
                if stream.peer is not None:  # a WebSocket tunnel's bytes
                    stream.peer.write(event.data)
                    stream.ex.conn.touched = True
                elif event.data:
                    stream.ex.body_chunk(event.data)
            except RemoteProtocolError as exc:
                stream.refuse(exc.status_hint, str(exc))
                return
            if stream.paused:
                stream.unacked += event.flow_controlled_length
            elif event.flow_controlled_length:
                self.acknowledge(stream, event.flow_controlled_length)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.request_done = True
                ex = stream.ex
                if stream.peer is not None:
                    stream.tunnel_eof("client")
                elif ex is not None and not ex.finished:
                    ex.body_complete()
                elif ex is not None:
                    ex.body_done = True
                self.maybe_forget(stream)
        elif isinstance(event, h2.events.StreamReset):
            if guard.reset(now):
                self.calm("too many stream resets")  # CVE-2023-44487
                return
            stream = self.streams.pop(event.stream_id, None)
            if self.listener is not None:
                self.listener.h2_resets += 1
            if stream is not None and stream.ex is not None and not stream.ex.finished:
                stream.ex.abort()
        elif isinstance(event, h2.events.WindowUpdated):
            if guard.control(now):
                self.calm("WINDOW_UPDATE flood")
                return
            if event.stream_id:
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    self.flush_stream(stream)
            else:
                for stream in list(self.streams.values()):
                    if stream.out:
                        self.flush_stream(stream)
        elif isinstance(
            event,
            h2.events.PingReceived
            | h2.events.RemoteSettingsChanged
            | h2.events.PriorityUpdated
            | h2.events.SettingsAcknowledged,
        ):
            if guard.control(now):
                self.calm("control frame flood")
        elif isinstance(event, h2.events.TrailersReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None and stream.ex is not None:
                stream.ex.body_trailers(event.headers)  # StreamEnded follows
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.close()

    def request(self, event: h2.events.RequestReceived) -> None:
        stream_id = event.stream_id
        if self.goaway_sent and stream_id > self.last_stream:
            self.h2.reset_stream(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        if len(self.streams) >= self.settings.h2_max_streams:
            self.h2.reset_stream(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            if self.guard.control(self.loop.time()):  # costs a frame, like a PING: counted so
                self.calm("streams over the concurrency limit")
            return
        engine = self.engine_of()  # a reload applies from the next stream on
        stream = self.streams[stream_id] = H2Stream(self, stream_id)
        if self.listener is not None:
            self.listener.h2_streams += 1
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        stream.begin(engine, event.headers, event.stream_ended is not None)

    # -- writing -----------------------------------------------------------------------------

    def send_headers(self, stream: H2Stream, fields: list, end: bool) -> None:
        if self.closed:
            return
        try:
            self.h2.send_headers(stream.stream_id, fields, end_stream=end)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return
        if not self.corked:
            self.flush()

    def flush_stream(self, stream: H2Stream) -> None:
        """Send what the stream's window allows; END_STREAM once all of it went out."""
        if self.closed:
            return
        h2c = self.h2
        sid = stream.stream_id
        sent = False
        try:
            while stream.out:
                window = min(h2c.local_flow_control_window(sid), h2c.max_outbound_frame_size)
                if window <= 0:
                    break
                data = stream.out[0]
                if len(data) <= window:
                    stream.out.pop(0)
                else:
                    stream.out[0] = data[window:]
                    data = data[:window]
                stream.out_size -= len(data)
                sent = True
                last = stream.ended and not stream.out and stream.trailers is None
                h2c.send_data(sid, data, end_stream=last)
                if last:
                    stream.end_sent = True
            if stream.ended and not stream.out and not stream.end_sent:
                stream.end_sent = True
                if stream.trailers is None:
                    h2c.end_stream(sid)
                else:
                    h2c.send_headers(sid, stream.trailers, end_stream=True)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError, KeyError):
            stream.out, stream.out_size = [], 0
            stream.end_sent = True
        ex = stream.ex
        up = ex.upstream if ex is not None else None
        # Bytes left waiting for the client's window, whatever their size, start (or, after
        # progress, restart) the stall clock: a small response behind a zero window must be
        # reset after body_timeout too, not hold the stream and the connection for ever.
        if not stream.out:
            stream.stalled_since = 0.0
        elif not stream.stalled_since:
            stream.stalled_since = self.loop.time()
            self.schedule(self.settings.body_timeout)
        elif sent:
            stream.stalled_since = self.loop.time()
        if stream.out_size > self.settings.h2_stream_buffer or self.write_paused:
            if up is not None and not stream.upstream_paused:
                up.pause_reading()
                stream.upstream_paused = True
        else:
            if stream.upstream_paused and up is not None:
                up.resume_reading()
            stream.upstream_paused = False
        if not self.corked:
            self.flush()
        self.maybe_forget(stream)

    def acknowledge(self, stream: H2Stream, n: int) -> None:
        try:
            self.h2.acknowledge_received_data(n, stream.stream_id)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return
        if not self.corked:
            self.flush()

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.closed:
            self.transport.write(data)

    # -- the end of streams and of the connection --------------------------------------------

    def reset(self, stream: H2Stream, code: int) -> None:
        self.streams.pop(stream.stream_id, None)
        try:
            self.h2.reset_stream(stream.stream_id, code)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            pass
        if stream.ex is not None and not stream.ex.finished:
            stream.ex.abort()
        if not self.corked:
            self.flush()

    def stream_done(self, stream: H2Stream) -> None:
        """The exchange finished (response written or queued)."""
        self.maybe_forget(stream)

    def maybe_forget(self, stream: H2Stream) -> None:
        ex = stream.ex
        if ex is None or not ex.finished or not stream.end_sent:
            return
        if self.streams.pop(stream.stream_id, None) is None:
            return
        if not stream.request_done:
            # Answered before the whole body came: the rest is not wanted (RFC 9113 §8.1).
            try:
                self.h2.reset_stream(stream.stream_id, h2.errors.ErrorCodes.NO_ERROR)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                pass
        if not self.streams:
            if self.draining:
                self.close()
            else:
                self.schedule(self.settings.keepalive_timeout)

    def calm(self, why: str, code: int = _CALM) -> None:
        """GOAWAY with `code` (ENHANCE_YOUR_CALM for floods) and close."""
        if self.gone:
            return
        self.gone = True
        log.warning("http2 %s:%d: %s: GOAWAY", self.client[0], self.client[1], why)
        try:
            self.h2.close_connection(code)
        except h2.exceptions.ProtocolError:
            pass
        self.goaway_count()
        self.flush()
        self.close()

    def goaway_count(self) -> None:
        if self.listener is not None:
            self.listener.h2_goaways += 1

    def drain(self, grace: float) -> None:
        """Reload or shutdown: GOAWAY with the last stream id; streams in flight finish; the
        connection closes when none is left (`maybe_forget`), an idle one after `grace`
        seconds. As with HTTP/1.1 (`H1Server.drain`), `grace` is the idle grace (1 s from the
        runtime): the deadline for streams in flight is the runtime's `drain_timeout`."""
        if self.draining or self.closed:
            return
        self.draining = True
        self.goaway_sent = True
        self.last_stream = self.h2.highest_inbound_stream_id
        self.flush()
        if self.transport is not None:
            frame = GoAwayFrame(0, last_stream_id=self.last_stream, error_code=0)
            self.transport.write(frame.serialize())
        self.goaway_count()
        if not self.streams:
            self.loop.call_later(grace, self.close)

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.flush()
            self.transport.close()

    def schedule(self, seconds: float) -> None:
        """The connection's one timer: idle keep-alive, or a zero-window stall check."""
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_later(seconds, self._expired)

    def _expired(self) -> None:
        self.timer = None
        if self.closed:
            return
        if not self.streams:
            self.calm("idle", h2.errors.ErrorCodes.NO_ERROR)
            return
        now = self.loop.time()
        limit = self.settings.body_timeout
        for stream in list(self.streams.values()):
            if stream.stalled_since and now - stream.stalled_since >= limit:
                log.info("http2 %s:%d: stream stalled on a zero window: reset", *self.client)
                self.reset(stream, h2.errors.ErrorCodes.FLOW_CONTROL_ERROR)
        if any(s.stalled_since for s in self.streams.values()):
            self.schedule(limit / 2)
