"""The sending half of `l7.h2conn.H2Connection`, and the state both halves share (sans-IO):
the streams, the windows both ways, the bytes queued for the client.

Responses go out as the adapter asks (`send_headers`, `send_data` within
`local_flow_control_window`, `reset_stream`); request bodies the adapter took are given back
to the client's windows with `acknowledge_received_data`, once half a window is owed (as
nginx does), so a client that sends small bodies gets no WINDOW_UPDATE at all.
"""

from __future__ import annotations

from jh2._hazmat import Decoder

from l7.h2events import StreamClosedError
from l7.h2frames import (
    CONTINUATION,
    DATA,
    DEFAULT_WINDOW,
    ENABLE_CONNECT_PROTOCOL,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADER_TABLE_SIZE,
    HEADERS,
    INITIAL_WINDOW_SIZE,
    MAX_CONCURRENT_STREAMS,
    MAX_FRAME,
    MAX_HEADER_LIST_SIZE,
    RESET_MEMORY,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    StreamState,
    frame_header,
    settings_payload,
)
from l7.hpackout import TABLE_SIZE_ZERO, encode_block

__all__ = ["H2Sender"]


class H2Sender:
    """Our settings, the streams and windows, and the frames we send. The `send_*` calls
    raise StreamClosedError on a stream that cannot take them; `data_to_send` returns what
    is queued, as one bytes object."""

    def __init__(
        self,
        max_streams: int,
        max_header_list: int,
        header_table_size: int,
        initial_window: int,
        connect_protocol: bool,
    ) -> None:
        self.decoder = Decoder(max_header_list)
        self.decoder.max_allowed_table_size = header_table_size
        self.table_update = False  # the client set SETTINGS_HEADER_TABLE_SIZE: say ours is 0
        self.local = {
            MAX_CONCURRENT_STREAMS: max_streams,
            MAX_HEADER_LIST_SIZE: max_header_list,
            HEADER_TABLE_SIZE: header_table_size,
            INITIAL_WINDOW_SIZE: initial_window,
            ENABLE_CONNECT_PROTOCOL: int(connect_protocol),
        }
        self.settings_pending = False
        self.max_block = max_header_list + MAX_FRAME  # a header block's bytes, compressed
        self.streams: dict[int, StreamState] = {}
        self.reset_recent: set[int] = set()
        self.highest_inbound_stream_id = 0
        self.out: list[bytes] = []
        self.inbuf = b""
        self.preface_seen = False
        self.settings_seen = False
        self.closed = False
        # Our receiving side: what a new stream may be sent before a WINDOW_UPDATE (the
        # default until the client acknowledged our SETTINGS), the connection's window.
        self.inbound_initial = DEFAULT_WINDOW
        self.conn_recv_window = DEFAULT_WINDOW
        self.conn_recv_max = DEFAULT_WINDOW
        self.conn_unacked = 0
        # Our sending side, by the client's settings.
        self.outbound_initial = DEFAULT_WINDOW
        self.conn_send_window = DEFAULT_WINDOW
        self.max_outbound_frame_size = MAX_FRAME
        # An open header block: its stream, its HEADERS flags, its parts.
        self.block_stream = 0
        self.block_flags = 0
        self.block: list[bytes] = []
        self.block_size = 0

    # -- sending -----------------------------------------------------------------------------

    def initiate_connection(self) -> None:
        self.out.append(frame_header(len(payload := settings_payload(self.local)), SETTINGS, 0, 0))
        self.out.append(payload)
        self.settings_pending = True

    def increment_flow_control_window(self, n: int) -> None:
        """A bigger window for the whole connection than the 64 KiB it starts with."""
        self.conn_recv_window += n
        self.conn_recv_max += n
        self.out.append(frame_header(4, WINDOW_UPDATE, 0, 0) + n.to_bytes(4, "big"))

    def data_to_send(self) -> bytes:
        out = self.out
        if not out:
            return b""
        self.out = []
        return b"".join(out)

    def local_flow_control_window(self, stream_id: int) -> int:
        """What may be sent on the stream now: its window and the connection's."""
        stream = self.streams.get(stream_id)
        if stream is None or not stream.send_open:
            raise StreamClosedError(stream_id)
        return min(stream.send_window, self.conn_send_window)

    def send_headers(
        self, stream_id: int, fields: list[tuple[bytes, bytes]], end_stream: bool
    ) -> None:
        """A response head, an informational one (1xx) or trailers (with END_STREAM)."""
        stream = self.streams.get(stream_id)
        if stream is None or not stream.send_open:
            raise StreamClosedError(stream_id)
        block = encode_block(fields)
        if self.table_update:
            self.table_update = False
            block = TABLE_SIZE_ZERO + block
        flags = END_STREAM if end_stream else 0
        size = self.max_outbound_frame_size
        out = self.out
        if len(block) <= size:
            out.append(frame_header(len(block), HEADERS, flags | END_HEADERS, stream_id))
            out.append(block)
        else:
            first = block[:size]
            out.append(frame_header(size, HEADERS, flags, stream_id))
            out.append(first)
            for at in range(size, len(block), size):
                part = block[at : at + size]
                last = at + size >= len(block)
                out.append(
                    frame_header(len(part), CONTINUATION, END_HEADERS if last else 0, stream_id)
                )
                out.append(part)
        if end_stream:
            self.end_sending(stream)

    def send_data(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        """DATA within the windows (`local_flow_control_window`) and the frame size."""
        stream = self.streams.get(stream_id)
        if stream is None or not stream.send_open:
            raise StreamClosedError(stream_id)
        n = len(data)
        if n > stream.send_window or n > self.conn_send_window or n > self.max_outbound_frame_size:
            raise StreamClosedError(stream_id)  # a caller's bug: nothing is sent
        stream.send_window -= n
        self.conn_send_window -= n
        self.out.append(frame_header(n, DATA, END_STREAM if end_stream else 0, stream_id))
        if n:
            self.out.append(data)
        if end_stream:
            self.end_sending(stream)

    def end_stream(self, stream_id: int) -> None:
        self.send_data(stream_id, b"", True)

    def end_sending(self, stream: StreamState) -> None:
        stream.send_open = False
        if not stream.recv_open:
            del self.streams[stream.stream_id]

    def reset_stream(self, stream_id: int, code: int) -> None:
        """RST_STREAM, once: a stream already closed is left alone."""
        if self.streams.pop(stream_id, None) is None:
            return
        self.forget_reset(stream_id)
        self.out.append(frame_header(4, RST_STREAM, 0, stream_id) + code.to_bytes(4, "big"))

    def forget_reset(self, stream_id: int) -> None:
        recent = self.reset_recent
        if len(recent) >= RESET_MEMORY:
            recent.clear()
        recent.add(stream_id)

    def acknowledge_received_data(self, n: int, stream_id: int) -> None:
        """The receiver took `n` bytes: WINDOW_UPDATE once half a window is owed, on the
        stream while it still sends, and on the connection."""
        self.conn_unacked += n
        if self.conn_unacked * 2 >= self.conn_recv_max:
            owed, self.conn_unacked = self.conn_unacked, 0
            self.conn_recv_window += owed
            self.out.append(frame_header(4, WINDOW_UPDATE, 0, 0) + owed.to_bytes(4, "big"))
        stream = self.streams.get(stream_id)
        if stream is None or not stream.recv_open:
            return
        stream.unacked += n
        if stream.unacked * 2 >= self.inbound_initial:
            owed, stream.unacked = stream.unacked, 0
            stream.recv_window += owed
            self.out.append(frame_header(4, WINDOW_UPDATE, 0, stream_id) + owed.to_bytes(4, "big"))

    def send_goaway(self, code: int, last_stream_id: int) -> None:
        self.out.append(
            frame_header(8, GOAWAY, 0, 0)
            + last_stream_id.to_bytes(4, "big")
            + code.to_bytes(4, "big")
        )

    def close_connection(self, code: int) -> None:
        """GOAWAY with `code` and the last stream we saw; nothing more is read."""
        if not self.closed:
            self.closed = True
            self.send_goaway(code, self.highest_inbound_stream_id)
