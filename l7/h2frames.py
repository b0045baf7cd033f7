"""HTTP/2's wire constants, a stream's state, and the frame bytes the connection writes
(RFC 9113 §4, §6), for `l7.h2send` and `l7.h2conn` (sans-IO)."""

from __future__ import annotations

from typing import Final

__all__ = ["PREFACE", "StreamState", "frame_header", "settings_payload"]

PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MAX_WINDOW: Final = 2**31 - 1
DEFAULT_WINDOW: Final = 65535
MAX_FRAME: Final = 16384  # what we read: SETTINGS_MAX_FRAME_SIZE left at its default
RESET_MEMORY: Final = 1024  # streams we reset, whose late frames are dropped quietly (§5.4.2)

# Frame types and flags (RFC 9113 §6).
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS = 0, 1, 2, 3, 4
PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 5, 6, 7, 8, 9
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20
# Settings (RFC 9113 §6.5.2, RFC 8441 §3).
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS = 1, 2, 3
INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE, ENABLE_CONNECT_PROTOCOL = 4, 5, 6, 8


class StreamState:
    """Which ways a stream is open (RFC 9113 §5.1: open, half-closed either way), its
    windows both ways, and what its `content-length` promised against what came."""

    __slots__ = (
        "content_length",
        "received",
        "recv_open",
        "recv_window",
        "send_open",
        "send_window",
        "stream_id",
        "unacked",
    )

    def __init__(self, stream_id: int, send_window: int, recv_window: int) -> None:
        self.stream_id = stream_id
        self.recv_open = True
        self.send_open = True
        self.send_window = send_window
        self.recv_window = recv_window
        self.unacked = 0  # taken by the receiver, not yet given back with WINDOW_UPDATE
        self.content_length = -1
        self.received = 0


def frame_header(length: int, kind: int, flags: int, stream_id: int) -> bytes:
    """The 9 bytes before a frame's payload (RFC 9113 §4.1)."""
    return ((length << 48) | (kind << 40) | (flags << 32) | stream_id).to_bytes(9, "big")


def settings_payload(settings: dict[int, int]) -> bytes:
    return b"".join(
        ident.to_bytes(2, "big") + value.to_bytes(4, "big") for ident, value in settings.items()
    )
