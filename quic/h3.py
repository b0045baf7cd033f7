"""The HTTP/3 adapter on the client side: one QUIC connection, H3 events to exchanges and back.

One `H3Server` per QUIC connection (made by the endpoint, quic/endpoint.py, for a client's
first Initial); one `H3Stream` per request, which is the exchange's `ClientStream`
(l7/sides.py), as `l7.h2.H2Stream` is for HTTP/2. aioquic's sans-IO `QuicConnection` does
QUIC (handshake, loss recovery, congestion control, path validation when a client migrates,
idle timeout) and `H3Connection` does HTTP/3 framing and QPACK; this object feeds them
datagrams with the loop's time, drains their events, sends what they queue and re-arms one
timer (aioquic's `get_timer`/`handle_timer`), as aioquic's own asyncio adapter does.

Flow control with bounded memory, as for HTTP/2:
- request bodies: aioquic raises a stream's receive window as soon as data arrives; `ServerQuic`
  holds it back (no MAX_STREAM_DATA) for a stream whose exchange paused reading, so a slow
  server stalls that stream's client, not l4lb's memory;
- response bodies: aioquic queues without limit, so the server is paused while a stream's
  unacknowledged bytes are over `h2_stream_buffer`, and resumed as acknowledgements come.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from aioquic.buffer import encode_uint_var
from aioquic.h3.connection import ErrorCode, FrameType, H3Connection, encode_frame
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic import events as qe

from l4lb.errors import RemoteProtocolError
from l7.streams import (
    StreamSide,
    head_fields,
    simple_fields,
    status_value,
)
from quic.connection import ServerH3, ServerQuic

if TYPE_CHECKING:
    from l7.exchange import Exchange
    from l7.model import Response

__all__ = ["H3Server", "H3Stream"]

log = logging.getLogger("l4lb")


_SAFE = (b"GET", b"HEAD", b"OPTIONS")  # what 0-RTT may carry (RFC 8470 §3; replays are safe)


class H3Stream(StreamSide):
    """One request on an HTTP/3 connection: the exchange's client side."""

    __slots__ = (
        "end_sent",
        "received",
        "stream_id",
        "upstream_paused",
    )

    def __init__(self, conn: H3Server, stream_id: int) -> None:
        self.conn = conn
        self.version = "3"
        self.stream_id = stream_id
        self.ex = None
        self.end_sent = False
        self.request_done = False
        self.upstream_paused = False
        self.received = 0  # request body bytes, checked against its content-length

    # -- the response ------------------------------------------------------------------------

    def send_interim(self, ex: Exchange, response: Response) -> None:
        fields = [(b":status", status_value(response.status)), *response.fields()]
        self.conn.send_headers(self, fields, False)

    def send_head(self, ex: Exchange, response: Response) -> None:
        if ex.framing != "none":
            ex.framing = "stream"
        end = ex.framing == "none"
        self.end_sent = end
        self.conn.send_headers(self, head_fields(response), end)

    def send_data(self, ex: Exchange, data: bytes) -> None:
        self.conn.send_data(self, data, False)

    def send_end(self, ex: Exchange) -> None:
        if not self.end_sent:
            self.end_sent = True
            if ex.response_trailers:
                self.conn.send_headers(self, ex.response_trailers, True)
            else:
                self.conn.send_data(self, b"", True)

    def send_simple(self, ex: Exchange, status: int, fields: list, body: bytes) -> None:
        head = simple_fields(status, fields)
        self.end_sent = True
        if body:
            self.conn.send_headers(self, head, False)
            self.conn.send_data(self, body, True)
        else:
            self.conn.send_headers(self, head, True)

    # -- flow control asked by the pipeline --------------------------------------------------

    def pause_reading(self) -> None:
        self.conn.quic.held.add(self.stream_id)

    def resume_reading(self) -> None:
        held = self.conn.quic.held
        if self.stream_id in held:
            held.discard(self.stream_id)
            self.conn.transmit()  # the MAX_STREAM_DATA held back

    def abort(self) -> None:
        self.conn.reset(self, ErrorCode.H3_INTERNAL_ERROR)

    def cancel(self) -> None:
        self.conn.reset(self, ErrorCode.H3_REQUEST_CANCELLED)

    def exchange_done(self, ex: Exchange) -> None:
        self.conn.forget(self)


class H3Server:
    """One QUIC connection from a client, carrying HTTP/3. `engine_of()` returns the
    listener's current engine (a reload applies from the next request on)."""

    def __init__(
        self,
        endpoint: Any,  # the quic.endpoint.QuicEndpoint that made this connection
        quic: ServerQuic,
        client: tuple[str, int],
        qpack: tuple[int, int],
    ) -> None:
        self.endpoint = endpoint
        self.quic = quic
        quic.held = set()
        self.client = client
        self.qpack = qpack
        self.loop = endpoint.loop
        self.listener = endpoint.listener
        self.h3: H3Connection | None = None
        self.streams: dict[int, H3Stream] = {}
        self.forwarding: tuple[Any, bytes, bytes] = (None, b"", b"")
        self.corked = 0
        self.draining = False
        self.closed = False
        self.handshake_done = False
        self.timer: Any = None
        self.timer_at: float | None = None
        self.cids: set[bytes] = set()

    # -- input -------------------------------------------------------------------------------

    def datagram(self, data: bytes, addr: Any, now: float) -> None:
        if self.closed:
            return
        self.quic.receive_datagram(data, addr, now)
        self.process()

    def process(self) -> None:
        """Drain aioquic's events into H3 and the pipeline, then send what they queued."""
        self.corked += 1
        try:
            while (event := self.quic.next_event()) is not None:
                self.quic_event(event)
                if self.h3 is not None and not self.closed:
                    for h3_event in self.h3.handle_event(event):
                        self.h3_event(h3_event)
        except Exception:  # a bug: it costs this connection, logged, and nothing else
            log.exception("http3 %s:%d: internal error", self.client[0], self.client[1])
            self.quic.close(error_code=ErrorCode.H3_INTERNAL_ERROR, reason_phrase="internal")
        finally:
            self.corked -= 1
        self.transmit()

    def quic_event(self, event: qe.QuicEvent) -> None:
        endpoint = self.endpoint
        if isinstance(event, qe.ProtocolNegotiated):
            if event.alpn_protocol in ("h3",) and self.h3 is None:
                self.h3 = ServerH3(self.quic, *self.qpack)
        elif isinstance(event, qe.HandshakeCompleted):
            self.handshake_done = True
            endpoint.handshake_done(self)
        elif isinstance(event, qe.ConnectionIdIssued):
            endpoint.add_cid(event.connection_id, self)
        elif isinstance(event, qe.ConnectionIdRetired):
            endpoint.drop_cid(event.connection_id)
        elif isinstance(event, qe.StreamReset):
            stream = self.streams.pop(event.stream_id, None)
            if self.listener is not None:
                self.listener.h3_resets += 1
            if stream is not None and stream.ex is not None and not stream.ex.finished:
                stream.ex.abort()
        elif isinstance(event, qe.ConnectionTerminated):
            self.terminated()

    def h3_event(self, event: Any) -> None:
        if isinstance(event, HeadersReceived):
            stream = self.streams.get(event.stream_id)
            if stream is None:
                self.request(event)
            elif event.stream_ended:  # the trailer section
                if stream.ex is not None:
                    stream.ex.body_trailers(event.headers)
                self.request_ended(stream)
        elif isinstance(event, DataReceived):
            stream = self.streams.get(event.stream_id)
            if stream is None or stream.ex is None:
                return
            ex = stream.ex
            length = ex.request.length if ex.body_kind == "length" else None
            if event.data and not ex.finished:
                # aioquic checks content-length only at the stream's end; by then the excess
                # would be with the HTTP/1.1 server, read there as a request of its own
                # (RFC 9114 §4.1.2: malformed as soon as DATA passes it). Refused first.
                stream.received += len(event.data)
                if length is not None and stream.received > length:
                    stream.refuse(400, "request body longer than its content-length")
                    return
                try:
                    ex.body_chunk(event.data)
                except RemoteProtocolError as exc:
                    stream.refuse(exc.status_hint, str(exc))
                    return
            if event.stream_ended:
                if length is not None and stream.received < length and not ex.finished:
                    stream.refuse(400, "request body shorter than its content-length")
                    return
                self.request_ended(stream)

    def request_ended(self, stream: H3Stream) -> None:
        stream.request_done = True
        ex = stream.ex
        if ex is not None and not ex.finished:
            ex.body_complete()
        elif ex is not None:
            ex.body_done = True
        self.forget(stream)

    def request(self, event: HeadersReceived) -> None:
        stream_id = event.stream_id
        if self.draining:
            self.quic.reset_stream(stream_id, ErrorCode.H3_REQUEST_REJECTED)
            return
        engine = self.endpoint.engine_of()
        stream = self.streams[stream_id] = H3Stream(self, stream_id)
        listener = self.listener
        if listener is not None:
            listener.h3_streams += 1
        fields = event.headers
        if not self.handshake_done:
            # Early data (0-RTT), which an attacker may replay: safe methods go on marked
            # `Early-Data: 1` for the server to judge (it may answer 425, which the client
            # gets and retries after the handshake); others are answered 425 (RFC 8470 §5).
            method = next((v for n, v in fields if n == b":method"), b"")
            if method not in _SAFE:
                if listener is not None:
                    listener.h3_early_refused += 1
                stream.refuse_head(engine, 425, "request in early data (RFC 8470)")
                return
            if listener is not None:
                listener.h3_early_accepted += 1
            fields = [*fields, (b"early-data", b"1")]
        stream.begin(engine, fields, bool(event.stream_ended))

    # -- output ------------------------------------------------------------------------------

    def send_headers(self, stream: H3Stream, fields: list, end: bool) -> None:
        if self.closed or self.h3 is None:
            return
        try:
            self.h3.send_headers(stream.stream_id, fields, end_stream=end)
        except Exception as exc:  # aioquic raises plain errors for a stream it closed
            log.debug("http3: headers on stream %d: %s", stream.stream_id, exc)
            return
        if not self.corked:
            self.transmit()

    def send_data(self, stream: H3Stream, data: bytes, end: bool) -> None:
        if self.closed or self.h3 is None:
            return
        try:
            self.h3.send_data(stream.stream_id, data, end_stream=end)
        except Exception as exc:  # (a stream the client reset or stopped)
            log.debug("http3: data on stream %d: %s", stream.stream_id, exc)
            return
        if not end and self._queued(stream.stream_id) > self.endpoint.stream_buffer:
            ex = stream.ex
            if ex is not None and ex.upstream is not None and not stream.upstream_paused:
                ex.upstream.pause_reading()
                stream.upstream_paused = True
                self.endpoint.paused.add(self)
        if not self.corked:
            self.transmit()

    def _queued(self, stream_id: int) -> int:
        """Response bytes of a stream not yet acknowledged by the client."""
        qs = self.quic._streams.get(stream_id)
        return len(qs.sender._buffer) if qs is not None else 0

    def flush(self) -> None:
        """What the streams queued goes out (`l7.streams.release`, at the end of the turn of the
        loop that read from servers)."""
        self.transmit()

    def transmit(self) -> None:
        """Send the queued datagrams and re-arm the one timer at aioquic's next deadline."""
        if self.corked or self.closed:
            return
        quic, endpoint = self.quic, self.endpoint
        endpoint.send_all(quic.datagrams_to_send(now=self.loop.time()))
        at = quic.get_timer()
        if self.timer is not None and self.timer_at != at:
            self.timer.cancel()
            self.timer = None
        if self.timer is None and at is not None:
            self.timer = self.loop.call_at(at, self._expired)
        self.timer_at = at
        if self in endpoint.paused:
            self._resume_servers()

    def _resume_servers(self) -> None:
        limit = self.endpoint.stream_buffer
        waiting = False
        for stream in self.streams.values():
            if not stream.upstream_paused:
                continue
            if self._queued(stream.stream_id) <= limit:
                stream.upstream_paused = False
                ex = stream.ex
                if ex is not None and ex.upstream is not None:
                    ex.upstream.resume_reading()
            else:
                waiting = True
        if not waiting:
            self.endpoint.paused.discard(self)

    def _expired(self) -> None:
        self.timer = None
        at, self.timer_at = self.timer_at, None
        if self.closed:
            return
        self.quic.handle_timer(now=max(at or 0.0, self.loop.time()))
        self.process()

    # -- the end of streams and of the connection --------------------------------------------

    def reset(self, stream: H3Stream, code: int) -> None:
        self.streams.pop(stream.stream_id, None)
        self.quic.held.discard(stream.stream_id)
        try:
            self.quic.reset_stream(stream.stream_id, code)
        except Exception as exc:  # (already reset or finished)
            log.debug("http3: reset stream %d: %s", stream.stream_id, exc)
        if stream.ex is not None and not stream.ex.finished:
            stream.ex.abort()
        if not self.corked:
            self.transmit()

    def forget(self, stream: H3Stream) -> None:
        ex = stream.ex
        if ex is None or not ex.finished or not stream.end_sent:
            return
        if self.streams.pop(stream.stream_id, None) is None:
            return
        self.quic.held.discard(stream.stream_id)
        if not stream.request_done:
            # Answered before the whole body came: the rest is not wanted (RFC 9114 §4.1).
            try:
                self.quic.stop_stream(stream.stream_id, ErrorCode.H3_NO_ERROR)
            except Exception as exc:
                log.debug("http3: stop stream %d: %s", stream.stream_id, exc)
        if not self.streams and self.draining:
            self.close_when_delivered()

    def close_when_delivered(self, polls: int = 40) -> None:
        """Close a draining connection once every response it sent has been acknowledged:
        aioquic's close() sends CONNECTION_CLOSE at once and drops stream data still queued
        or in flight, so a response finished just before it was lost. Checked every 50 ms,
        at most `polls` times (2 s: an acknowledgement takes a round trip)."""
        if self.closed:
            return
        pending = any(
            not s.sender.is_finished
            for sid, s in self.quic._streams.items()
            if sid % 4 == 0  # the client's request streams (not the control or QPACK ones)
        )
        if pending and polls > 0:
            self.loop.call_later(0.05, self.close_when_delivered, polls - 1)
        else:
            self.close()

    def drain(self, grace: float) -> None:
        """Reload or shutdown: GOAWAY (RFC 9114 §5.2) with the next stream id; streams in
        flight finish; the connection closes when none is left, or after `grace` seconds."""
        if self.draining or self.closed:
            return
        self.draining = True
        h3 = self.h3
        if h3 is not None and h3._local_control_stream_id is not None:
            last = max(self.streams, default=-4) + 4
            frame = encode_frame(FrameType.GOAWAY, encode_uint_var(max(last, 0)))
            self.quic.send_stream_data(h3._local_control_stream_id, frame)
        if self.listener is not None:
            self.listener.h3_goaways += 1
        if not self.streams:
            self.loop.call_later(min(grace, 0.2), self.close)
        # (else `forget` closes after the last stream: streams in flight have until the
        # runtime's drain_timeout, as on HTTP/2)
        self.transmit()

    def close(self, code: int = ErrorCode.H3_NO_ERROR) -> None:
        if not self.closed:
            self.quic.close(error_code=code)
            self.transmit()

    def abort(self) -> None:
        """End now (shutdown deadline): CONNECTION_CLOSE, and forget the connection."""
        self.close()
        self.terminated()

    def terminated(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            if stream.ex is not None and not stream.ex.finished:
                stream.ex.abort()
        self.endpoint.connection_ended(self)
