"""The HTTP/2 adapter on the client side, the connection: `l7.h2conn` events to streams, and
back.

One `H2Server` per connection (an `https` listener that negotiated ALPN `h2`, or an `http`
listener with `h2c = true` and the client's prior knowledge); one `l7.h2stream.H2Stream` per
request, the exchange's `ClientStream`, through the same pipeline as an HTTP/1.1 request.
`l7.h2conn.H2Connection` (sans-IO, ours, with jh2's HPACK in Rust) does the framing, the
stream states, flow control and the wire rules of RFC 9113: the preface, frame sizes,
CONTINUATION bounds, HPACK bombs through the header list size, table size updates over our
SETTINGS_HEADER_TABLE_SIZE, and `content-length` against DATA (a stream error, the DATA past
it never reported). A connection error ends the connection with GOAWAY carrying its code;
a stream error comes as `StreamInvalid`, its RST_STREAM sent; in both, nothing of the
stream reaches the pipeline.

What is decided here (defences.py holds the counting, h2fields.py the field rules, both
sans-IO):
- Malformed requests (RFC 9113 §8.2-8.3: field names and values, connection-specific
  fields, pseudo-headers; `:authority` and `host` that differ, §8.3.1) and trailer sections
  with pseudo-headers: `l7.h2fields`, the same rules as HTTP/3's. A stream error
  (§8.1.1): RST_STREAM PROTOCOL_ERROR, nothing forwarded (counted as a control frame, as a
  refused stream is). The server gets `Host: <authority>`.
- A client that keeps its HPACK table over our SETTINGS_HEADER_TABLE_SIZE once it
  acknowledged it (the decoder lets it): GOAWAY COMPRESSION_ERROR (`table_overrun`).
- Rapid reset (CVE-2023-44487) and control-frame floods (SETTINGS, PING, PRIORITY,
  WINDOW_UPDATE, empty DATA): counted per connection in a sliding window; over the limit,
  GOAWAY ENHANCE_YOUR_CALM and close, as nginx and Envoy do.
- Flow control both ways with bounded memory (the stream's side in l7/h2stream.py): a
  request body is acknowledged only once the exchange took it; a response body waits for
  the client's window, the server paused over `h2_stream_buffer`, the stream reset after
  `body_timeout` on a zero window (the connection's one timer).
- Writes once per read: `corked` (set in `data_received`, and by an upstream read until the
  end of that turn of the loop, `l7.streams.release`) holds the streams' DATA in `pending`
  until `flush`, which writes the connection's bytes once: the responses servers sent in one
  poll leave in one TLS record.
- Graceful GOAWAY at reload and shutdown: `send_goaway` with the last stream id (not
  `close_connection`, which stops reading), streams after it are refused, the connection closes
  when the last one is done or after the grace period.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

from l7 import h2events as ev
from l7.defences import FloodGuard
from l7.h2conn import PREFACE, H2Connection
from l7.h2fields import request_problem, trailer_problem
from l7.h2stream import H2Stream

__all__ = ["H2_PREFACE", "H2Server", "H2Stream"]

log: Final = logging.getLogger("l4lb")

H2_PREFACE: Final = PREFACE
_CALM: Final = ev.ENHANCE_YOUR_CALM
_PROTOCOL_ERROR: Final = ev.PROTOCOL_ERROR
_COMPRESSION_ERROR: Final = ev.COMPRESSION_ERROR


class H2Server(asyncio.Protocol):
    """One HTTP/2 client connection. `engine_of()` returns the listener's current engine."""

    def __init__(self, engine_of, client: tuple[str, int], on_close=None) -> None:
        self.engine_of = engine_of
        self.client = client
        self.on_close = on_close
        engine = engine_of()
        settings = engine.settings
        self.settings = settings
        self.connect_protocol = "websocket" in engine.upgrades
        self.h2 = H2Connection(
            settings.h2_max_streams,
            settings.max_header_bytes,
            settings.h2_header_table_size,
            settings.h2_window,
            # RFC 8441: WebSocket over a stream, when the listener allows WebSocket.
            self.connect_protocol,
        )
        # Watched once the client acknowledged a SETTINGS_HEADER_TABLE_SIZE under the 4096
        # bytes a table starts with (`table_overrun`).
        self.table_watch = False
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, H2Stream] = {}
        self.forwarding: tuple[Any, bytes, bytes] = (None, b"", b"")
        self.guard = FloodGuard(settings.h2_max_resets, settings.h2_max_control, 10.0)
        self.corked = 0
        self.pending: list[H2Stream] = []  # streams with DATA to push at the next flush
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
        except ev.H2ConnectionError as exc:
            log.info("http2 %s:%d: %s", self.client[0], self.client[1], exc)
            self.goaway_count()
            self.flush()  # the GOAWAY with the error code is queued
            self.close()
            return
        self.corked += 1
        try:
            on = _ON
            for event in events:
                if self.gone:
                    break
                handler = on.get(type(event))
                if handler is not None:
                    handler(self, event)
        except Exception:  # a bug: it costs this connection, logged, and nothing else
            log.exception("http2 %s:%d: internal error", self.client[0], self.client[1])
            self.calm("internal error", ev.INTERNAL_ERROR)
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

    # -- the connection's events: one method per event type (`_ON`, below the class) -------

    def on_data(self, event: ev.DataReceived) -> None:
        if not event.data and not event.ended and self.guard.control(self.loop.time()):
            self.calm("empty DATA frames")
            return
        stream = self.streams.get(event.stream_id)
        if stream is not None:
            stream.received_data(event.data, event.flow_controlled_length)
        elif event.flow_controlled_length:
            self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)

    def on_stream_ended(self, event: ev.StreamEnded) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is not None:
            stream.received_end()

    def on_reset(self, event: ev.StreamReset) -> None:
        if self.guard.reset(self.loop.time()):
            self.calm("too many stream resets")  # CVE-2023-44487
            return
        stream = self.streams.pop(event.stream_id, None)
        if self.listener is not None:
            self.listener.h2_resets += 1
        if stream is not None and stream.ex is not None and not stream.ex.finished:
            stream.ex.abort()

    def on_window(self, event: ev.WindowUpdated) -> None:
        if self.guard.control(self.loop.time()):
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

    def on_invalid(self, event: ev.StreamInvalid) -> None:
        """A stream error the connection found (RST_STREAM queued): the exchange ends, and
        what the server was sent of the request is never completed."""
        log.info("http2 %s:%d: stream %d: %s", *self.client, event.stream_id, event.why)
        stream = self.streams.pop(event.stream_id, None)
        if stream is not None and stream.ex is not None and not stream.ex.finished:
            stream.ex.abort()
        self.on_control(event)  # a frame for a frame: counted as a control frame

    def on_control(self, event: Any) -> None:
        if self.guard.control(self.loop.time()):
            self.calm("control frame flood")

    def on_settings_ack(self, event: ev.SettingsAcknowledged) -> None:
        self.table_watch = self.settings.h2_header_table_size < 4096
        self.on_control(event)

    def table_overrun(self) -> bool:
        """The client kept an HPACK table bigger than our SETTINGS_HEADER_TABLE_SIZE after
        acknowledging it (RFC 7541 §4.2: its next field block starts with a table size
        update): GOAWAY COMPRESSION_ERROR (RFC 9113 §4.3). jh2's decoder refuses an update
        over the limit, but not a client that never sends one (the table stays at 4096);
        python-hpack refused that, even before the acknowledgement."""
        if self.h2.decoder.header_table_size <= self.settings.h2_header_table_size:
            return False
        self.calm("HPACK table over SETTINGS_HEADER_TABLE_SIZE", _COMPRESSION_ERROR)
        return True

    def on_trailers(self, event: ev.TrailersReceived) -> None:
        if self.table_watch and self.table_overrun():
            return
        stream = self.streams.get(event.stream_id)
        if stream is not None and stream.ex is not None:
            problem = trailer_problem(event.headers)
            if problem is not None:  # the request is not completed: the server gets no end
                log.info("http2 %s:%d: malformed trailers: %s", *self.client, problem)
                self.reset(stream, _PROTOCOL_ERROR)
                return
            stream.ex.body_trailers(event.headers)  # StreamEnded follows

    def on_terminated(self, event: ev.ConnectionTerminated) -> None:
        self.close()

    def request(self, event: ev.RequestReceived) -> None:
        if self.table_watch and self.table_overrun():
            return
        stream_id = event.stream_id
        if self.goaway_sent and stream_id > self.last_stream:
            self.h2.reset_stream(stream_id, ev.REFUSED_STREAM)
            return
        if len(self.streams) >= self.settings.h2_max_streams:
            self.h2.reset_stream(stream_id, ev.REFUSED_STREAM)
            if self.guard.control(self.loop.time()):  # costs a frame, like a PING: counted so
                self.calm("streams over the concurrency limit")
            return
        problem = request_problem(event.headers, self.connect_protocol)
        if problem is not None:  # RFC 9113 §8.1.1: a stream error, nothing forwarded
            log.info("http2 %s:%d: malformed request: %s", *self.client, problem)
            self.h2.reset_stream(stream_id, _PROTOCOL_ERROR)
            if self.guard.control(self.loop.time()):  # a frame for a frame, as above
                self.calm("malformed requests")
            return
        engine = self.engine_of()  # a reload applies from the next stream on
        stream = self.streams[stream_id] = H2Stream(self, stream_id)
        if self.listener is not None:
            self.listener.h2_streams += 1
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        stream.begin(engine, event.headers, event.ended)

    # -- writing -----------------------------------------------------------------------------

    def send_headers(self, stream: H2Stream, fields: list, end: bool) -> None:
        if self.closed:
            return
        try:
            self.h2.send_headers(stream.stream_id, fields, end)
        except ev.StreamClosedError:
            return
        if not self.corked:
            self.flush()

    def flush_stream(self, stream: H2Stream) -> None:
        """Send what the stream's window allows; END_STREAM once all of it went out. While
        corked, the stream only waits in `pending` for the one `flush` of the batch."""
        if self.closed:
            return
        if self.corked:
            if not stream.queued:
                stream.queued = True
                self.pending.append(stream)
            return
        stream.push()
        self.maybe_forget(stream)
        self.flush()

    def flush(self) -> None:
        """The streams queued while corked hand the connection their DATA, then its bytes go out
        as one write."""
        pending = self.pending
        if pending:
            self.pending = []
            for stream in pending:
                stream.queued = False
                if not self.closed:
                    stream.push()
                    self.maybe_forget(stream)
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.closed:
            self.transport.write(data)

    # -- the end of streams and of the connection --------------------------------------------

    def reset(self, stream: H2Stream, code: int) -> None:
        self.streams.pop(stream.stream_id, None)
        try:
            self.h2.reset_stream(stream.stream_id, code)
        except ev.StreamClosedError:
            pass
        if stream.ex is not None and not stream.ex.finished:
            stream.ex.abort()
        if not self.corked:
            self.flush()

    def maybe_forget(self, stream: H2Stream) -> None:
        """Drop a stream whose exchange finished and whose END_STREAM went to h2."""
        ex = stream.ex
        if ex is None or not ex.finished or not stream.end_sent:
            return
        if self.streams.pop(stream.stream_id, None) is None:
            return
        if not stream.request_done:
            # Answered before the whole body came: the rest is not wanted (RFC 9113 §8.1).
            try:
                self.h2.reset_stream(stream.stream_id, ev.NO_ERROR)
            except ev.StreamClosedError:
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
        self.h2.close_connection(code)
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
        self.h2.send_goaway(ev.NO_ERROR, self.last_stream)
        self.flush()
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
            self.calm("idle", ev.NO_ERROR)
            return
        now = self.loop.time()
        limit = self.settings.body_timeout
        for stream in list(self.streams.values()):
            if stream.stalled_since and now - stream.stalled_since >= limit:
                log.info("http2 %s:%d: stream stalled on a zero window: reset", *self.client)
                self.reset(stream, ev.FLOW_CONTROL_ERROR)
        if any(s.stalled_since for s in self.streams.values()):
            self.schedule(limit / 2)


_ON: Final[dict[type, Any]] = {
    ev.RequestReceived: H2Server.request,
    ev.DataReceived: H2Server.on_data,
    ev.StreamEnded: H2Server.on_stream_ended,
    ev.StreamReset: H2Server.on_reset,
    ev.WindowUpdated: H2Server.on_window,
    ev.StreamInvalid: H2Server.on_invalid,
    ev.ControlReceived: H2Server.on_control,
    ev.SettingsAcknowledged: H2Server.on_settings_ack,
    ev.TrailersReceived: H2Server.on_trailers,
    ev.ConnectionTerminated: H2Server.on_terminated,
}
