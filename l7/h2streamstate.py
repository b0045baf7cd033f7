"""A stream's state in `l7.h2conn.H2Connection`, and the frame bytes it writes (sans-IO)."""

from __future__ import annotations

__all__ = ["StreamState", "frame_header", "settings_payload"]


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
