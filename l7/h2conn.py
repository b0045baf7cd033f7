"""HTTP/2 on the server side of a connection, sans-IO (RFC 9113): frames in, events out;
calls in, frames out.

Why our own rather than jh2's `H2Connection`: jh2's state machine and its framing are pure
Python and took about three quarters of an HTTP/2 request's time (bench/RESULTS.md); this
one knows only what a server needs (no push, no client side, no priority tree) and is
compiled with the hot path (setup.py). HPACK stays jh2's, in Rust (`jh2._hazmat`).

What it enforces, so that the adapter (l7/h2.py) never sees it: the preface and the first
SETTINGS; frame sizes (FRAME_SIZE_ERROR); stream ids (odd, increasing; frames on idle
streams); header blocks (CONTINUATION in sequence, a bound on a block's bytes against
CONTINUATION floods, HPACK errors: COMPRESSION_ERROR, a header list over our limit:
ENHANCE_YOUR_CALM); flow control both ways (windows over 2^31-1, DATA over a window:
FLOW_CONTROL_ERROR); a second HEADERS without END_STREAM; `content-length` against the DATA
received (a stream error: the DATA that goes past it is never reported); frames on closed
streams (§5.1). What a request's fields may hold is `l7.h2fields`'s, and floods are counted
by the adapter (`l7.defences`), from the events.
"""

from __future__ import annotations

from typing import Final

from jh2._hazmat import HPACKError, OversizedHeaderListError

from l7.h2events import (
    COMPRESSION_ERROR,
    ENHANCE_YOUR_CALM,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    PROTOCOL_ERROR,
    STREAM_CLOSED,
    ConnectionTerminated,
    ControlReceived,
    DataReceived,
    H2ConnectionError,
    RequestReceived,
    SettingsAcknowledged,
    StreamEnded,
    StreamInvalid,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from l7.h2frames import (
    ACK,
    CONTINUATION,
    DATA,
    ENABLE_PUSH,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADER_TABLE_SIZE,
    HEADERS,
    INITIAL_WINDOW_SIZE,
    MAX_FRAME,
    MAX_FRAME_SIZE,
    MAX_WINDOW,
    PADDED,
    PING,
    PREFACE,
    PRIORITY,
    PRIORITY_FLAG,
    PUSH_PROMISE,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    StreamState,
    frame_header,
)
from l7.h2send import H2Sender

__all__ = ["PREFACE", "H2Connection"]

_MAX_CONTINUATIONS: Final = 256


class H2Connection(H2Sender):
    """One client connection. `receive_data` returns events and raises H2ConnectionError
    (GOAWAY queued); sending is `l7.h2send.H2Sender`'s."""

    def fail(self, code: int, message: str) -> H2ConnectionError:
        """A connection error: GOAWAY queued, the error to raise returned."""
        self.close_connection(code)
        return H2ConnectionError(code, message)

    def stream_error(self, events: list, stream_id: int, code: int, why: str) -> None:
        if stream_id in self.streams:
            self.reset_stream(stream_id, code)
            events.append(StreamInvalid(stream_id, code, why))
        elif stream_id not in self.reset_recent:
            self.forget_reset(stream_id)
            self.out.append(frame_header(4, RST_STREAM, 0, stream_id) + code.to_bytes(4, "big"))

    # -- receiving ---------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list:
        if self.closed:
            return []
        if self.inbuf:
            data = self.inbuf + data
            self.inbuf = b""
        pos = 0
        if not self.preface_seen:
            if len(data) < 24:
                if PREFACE.startswith(data):
                    self.inbuf = data
                    return []
                raise self.fail(PROTOCOL_ERROR, "not an HTTP/2 preface")
            if data[:24] != PREFACE:
                raise self.fail(PROTOCOL_ERROR, "not an HTTP/2 preface")
            self.preface_seen = True
            pos = 24
        events: list = []
        end = len(data)
        while end - pos >= 9 and not self.closed:
            length = (data[pos] << 16) | (data[pos + 1] << 8) | data[pos + 2]
            if length > MAX_FRAME:
                raise self.fail(FRAME_SIZE_ERROR, f"a frame of {length} bytes")
            if end - pos - 9 < length:
                break
            kind = data[pos + 3]
            flags = data[pos + 4]
            sid = (
                ((data[pos + 5] & 0x7F) << 24)
                | (data[pos + 6] << 16)
                | (data[pos + 7] << 8)
                | data[pos + 8]
            )
            payload = data[pos + 9 : pos + 9 + length]
            pos += 9 + length
            if self.block_stream and kind != CONTINUATION:
                raise self.fail(PROTOCOL_ERROR, "a frame inside a header block")
            if not self.settings_seen and kind != SETTINGS:
                raise self.fail(PROTOCOL_ERROR, "the preface's SETTINGS did not come first")
            if kind == DATA:
                self.on_data(events, sid, flags, payload)
            elif kind == HEADERS:
                self.on_headers(events, sid, flags, payload)
            elif kind == CONTINUATION:
                self.on_continuation(events, sid, flags, payload)
            elif kind == WINDOW_UPDATE:
                self.on_window_update(events, sid, payload)
            elif kind == RST_STREAM:
                self.on_rst_stream(events, sid, payload)
            elif kind == SETTINGS:
                self.on_settings(events, sid, flags, payload)
            elif kind == PING:
                if length != 8:
                    raise self.fail(FRAME_SIZE_ERROR, "PING not 8 bytes")
                if sid:
                    raise self.fail(PROTOCOL_ERROR, "PING on a stream")
                if not flags & ACK:
                    self.out.append(frame_header(8, PING, ACK, 0) + payload)
                events.append(ControlReceived("ping"))
            elif kind == PRIORITY:
                if not sid:
                    raise self.fail(PROTOCOL_ERROR, "PRIORITY on stream 0")
                if length != 5:
                    self.stream_error(events, sid, FRAME_SIZE_ERROR, "PRIORITY not 5 bytes")
                elif int.from_bytes(payload[:4], "big") & MAX_WINDOW == sid:
                    self.stream_error(events, sid, PROTOCOL_ERROR, "a stream depends on itself")
                events.append(ControlReceived("priority"))
            elif kind == GOAWAY:
                if sid or length < 8:
                    raise self.fail(PROTOCOL_ERROR, "a malformed GOAWAY")
                last = int.from_bytes(payload[:4], "big") & MAX_WINDOW
                events.append(ConnectionTerminated(int.from_bytes(payload[4:8], "big"), last))
                self.closed = True
            elif kind == PUSH_PROMISE:
                raise self.fail(PROTOCOL_ERROR, "PUSH_PROMISE from a client")
            else:
                events.append(ControlReceived("unknown"))  # an extension's frame: ignored
        if pos < end and not self.closed:
            self.inbuf = data[pos:]
        return events

    def on_settings(self, events: list, sid: int, flags: int, payload: bytes) -> None:
        if sid:
            raise self.fail(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            if payload:
                raise self.fail(FRAME_SIZE_ERROR, "a SETTINGS ACK with a payload")
            if self.settings_pending:
                self.settings_pending = False
                self.apply_local()
                events.append(SettingsAcknowledged())
            else:
                events.append(ControlReceived("settings"))
            return
        if len(payload) % 6:
            raise self.fail(FRAME_SIZE_ERROR, "SETTINGS not a multiple of 6 bytes")
        self.settings_seen = True
        for at in range(0, len(payload), 6):
            ident = (payload[at] << 8) | payload[at + 1]
            value = int.from_bytes(payload[at + 2 : at + 6], "big")
            if ident == INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise self.fail(FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE too big")
                delta = value - self.outbound_initial
                self.outbound_initial = value
                for stream in self.streams.values():
                    stream.send_window += delta
                    if stream.send_window > MAX_WINDOW:
                        raise self.fail(FLOW_CONTROL_ERROR, "a stream window over 2^31-1")
            elif ident == MAX_FRAME_SIZE:
                if value < 16384 or value > 16777215:
                    raise self.fail(PROTOCOL_ERROR, "SETTINGS_MAX_FRAME_SIZE out of range")
                self.max_outbound_frame_size = value
            elif ident == HEADER_TABLE_SIZE:
                self.table_update = True
            elif ident == ENABLE_PUSH and value > 1:
                raise self.fail(PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH not 0 or 1")
        self.out.append(frame_header(0, SETTINGS, ACK, 0))
        events.append(ControlReceived("settings"))

    def apply_local(self) -> None:
        """Our SETTINGS_INITIAL_WINDOW_SIZE holds from the client's ACK on (§6.9.2)."""
        initial = self.local[INITIAL_WINDOW_SIZE]
        delta = initial - self.inbound_initial
        self.inbound_initial = initial
        for stream in self.streams.values():
            stream.recv_window += delta

    def on_window_update(self, events: list, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise self.fail(FRAME_SIZE_ERROR, "WINDOW_UPDATE not 4 bytes")
        delta = int.from_bytes(payload, "big") & MAX_WINDOW
        if not sid:
            if not delta:
                raise self.fail(PROTOCOL_ERROR, "a WINDOW_UPDATE of 0")
            self.conn_send_window += delta
            if self.conn_send_window > MAX_WINDOW:
                raise self.fail(FLOW_CONTROL_ERROR, "the connection window over 2^31-1")
            events.append(WindowUpdated(0, delta))
            return
        stream = self.streams.get(sid)
        if stream is None:
            if sid > self.highest_inbound_stream_id:
                raise self.fail(PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream")
            events.append(ControlReceived("window"))
        elif not delta:
            self.stream_error(events, sid, PROTOCOL_ERROR, "a WINDOW_UPDATE of 0")
        elif stream.send_window + delta > MAX_WINDOW:
            self.stream_error(events, sid, FLOW_CONTROL_ERROR, "a stream window over 2^31-1")
        else:
            stream.send_window += delta
            events.append(WindowUpdated(sid, delta))

    def on_rst_stream(self, events: list, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise self.fail(FRAME_SIZE_ERROR, "RST_STREAM not 4 bytes")
        if not sid or sid > self.highest_inbound_stream_id:
            raise self.fail(PROTOCOL_ERROR, "RST_STREAM on an idle stream")
        if self.streams.pop(sid, None) is not None:
            self.forget_reset(sid)
            events.append(StreamReset(sid, int.from_bytes(payload, "big")))
        else:
            events.append(ControlReceived("reset"))

    def on_data(self, events: list, sid: int, flags: int, payload: bytes) -> None:
        length = len(payload)
        if not sid:
            raise self.fail(PROTOCOL_ERROR, "DATA on stream 0")
        self.conn_recv_window -= length
        if self.conn_recv_window < 0:
            raise self.fail(FLOW_CONTROL_ERROR, "DATA over the connection window")
        data = payload
        if flags & PADDED:
            if not length or payload[0] >= length:
                raise self.fail(PROTOCOL_ERROR, "padding longer than the frame")
            data = payload[1 : length - payload[0]]
        stream = self.streams.get(sid)
        if stream is None:
            if sid > self.highest_inbound_stream_id:
                raise self.fail(PROTOCOL_ERROR, "DATA on an idle stream")
            self.acknowledge_received_data(length, 0)
            self.stream_error(events, sid, STREAM_CLOSED, "DATA on a closed stream")
            return
        why = ""
        code = PROTOCOL_ERROR
        if not stream.recv_open:
            why, code = "DATA after END_STREAM", STREAM_CLOSED
        else:
            stream.recv_window -= length
            stream.received += len(data)
            expected = stream.content_length
            if stream.recv_window < 0:
                why, code = "DATA over the stream window", FLOW_CONTROL_ERROR
            elif expected >= 0 and (
                stream.received > expected or (flags & END_STREAM and stream.received != expected)
            ):
                why = "DATA that disagrees with content-length"
        if why:
            self.acknowledge_received_data(length, 0)
            self.stream_error(events, sid, code, why)
            return
        ended = bool(flags & END_STREAM)
        events.append(DataReceived(sid, data, length, ended))
        if ended:
            self.end_receiving(events, stream)

    def end_receiving(self, events: list, stream: StreamState) -> None:
        stream.recv_open = False
        events.append(StreamEnded(stream.stream_id))
        if not stream.send_open:
            del self.streams[stream.stream_id]

    def on_headers(self, events: list, sid: int, flags: int, payload: bytes) -> None:
        if not sid or not sid & 1:
            raise self.fail(PROTOCOL_ERROR, "HEADERS on an even stream id")
        start = 0
        end = len(payload)
        if flags & PADDED:
            if not end:
                raise self.fail(PROTOCOL_ERROR, "padding longer than the frame")
            start = 1
            end -= payload[0]
        if flags & PRIORITY_FLAG:
            if int.from_bytes(payload[start : start + 4], "big") & MAX_WINDOW == sid:
                raise self.fail(PROTOCOL_ERROR, "a stream depends on itself")
            start += 5
        if end < start:
            raise self.fail(PROTOCOL_ERROR, "padding longer than the frame")
        block = payload[start:end]
        if flags & END_HEADERS:
            self.on_block(events, sid, flags, block)
            return
        self.block_stream, self.block_flags = sid, flags
        self.block, self.block_size = [block], len(block)

    def on_continuation(self, events: list, sid: int, flags: int, payload: bytes) -> None:
        if not self.block_stream or sid != self.block_stream:
            raise self.fail(PROTOCOL_ERROR, "CONTINUATION outside a header block")
        self.block.append(payload)
        self.block_size += len(payload)
        if self.block_size > self.max_block or len(self.block) > _MAX_CONTINUATIONS:
            raise self.fail(PROTOCOL_ERROR, "a header block too big (CONTINUATION flood)")
        if flags & END_HEADERS:
            block = b"".join(self.block)
            self.block_stream, self.block, self.block_size = 0, [], 0
            self.on_block(events, sid, self.block_flags, block)

    def on_block(self, events: list, sid: int, flags: int, block: bytes) -> None:
        """A whole header block: decoded whatever its stream (the HPACK table is the
        connection's), then a request, trailers, or a stream error."""
        try:
            raw = self.decoder.decode(block, True)
        except OversizedHeaderListError as exc:
            raise self.fail(ENHANCE_YOUR_CALM, f"a header list over our limit: {exc}") from None
        except HPACKError as exc:
            raise self.fail(COMPRESSION_ERROR, f"HPACK: {exc}") from None
        except Exception as exc:  # the decoder's own errors, whatever their class
            raise self.fail(COMPRESSION_ERROR, f"HPACK: {exc}") from None
        headers: list[tuple[bytes, bytes]] = [(h[0], h[1]) for h in raw]
        ended = bool(flags & END_STREAM)
        if sid > self.highest_inbound_stream_id:
            self.highest_inbound_stream_id = sid
            stream = StreamState(sid, self.outbound_initial, self.inbound_initial)
            self.streams[sid] = stream
            for name, value in headers:
                if name == b"content-length":
                    stream.content_length = int(value) if value.isdigit() else -1
            if ended and stream.content_length > 0:
                self.stream_error(events, sid, PROTOCOL_ERROR, "content-length without DATA")
                return
            events.append(RequestReceived(sid, headers, ended))
            if ended:
                self.end_receiving(events, stream)
            return
        known = self.streams.get(sid)
        if known is None:
            if sid not in self.reset_recent:
                raise self.fail(STREAM_CLOSED, "HEADERS on a closed stream")
        elif not known.recv_open:
            self.stream_error(events, sid, STREAM_CLOSED, "HEADERS after END_STREAM")
        elif not ended:
            self.stream_error(events, sid, PROTOCOL_ERROR, "trailers without END_STREAM")
        elif known.content_length >= 0 and known.received != known.content_length:
            self.stream_error(
                events, sid, PROTOCOL_ERROR, "DATA that disagrees with content-length"
            )
        else:
            events.append(TrailersReceived(sid, headers))
            self.end_receiving(events, known)
