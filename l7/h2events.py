"""What `l7.h2conn.H2Connection` reports from the client's frames, and its error codes.

Plain classes with slots, compiled with the hot path (setup.py): one small object per
event, dispatched by type in the adapter (l7/h2.py), as h11's and aioquic's events are.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "CANCEL",
    "COMPRESSION_ERROR",
    "ENHANCE_YOUR_CALM",
    "FLOW_CONTROL_ERROR",
    "FRAME_SIZE_ERROR",
    "INTERNAL_ERROR",
    "NO_ERROR",
    "PROTOCOL_ERROR",
    "REFUSED_STREAM",
    "STREAM_CLOSED",
    "ConnectionTerminated",
    "ControlReceived",
    "DataReceived",
    "H2ConnectionError",
    "RequestReceived",
    "SettingsAcknowledged",
    "StreamClosedError",
    "StreamEnded",
    "StreamInvalid",
    "StreamReset",
    "TrailersReceived",
    "WindowUpdated",
]

# Error codes (RFC 9113 §7).
NO_ERROR: Final = 0x0
PROTOCOL_ERROR: Final = 0x1
INTERNAL_ERROR: Final = 0x2
FLOW_CONTROL_ERROR: Final = 0x3
STREAM_CLOSED: Final = 0x5
FRAME_SIZE_ERROR: Final = 0x6
REFUSED_STREAM: Final = 0x7
CANCEL: Final = 0x8
COMPRESSION_ERROR: Final = 0x9
ENHANCE_YOUR_CALM: Final = 0xB


class H2ConnectionError(Exception):
    """A connection error (RFC 9113 §5.4.1): the GOAWAY with `code` is already queued, and
    the connection reads nothing more."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class StreamClosedError(Exception):
    """Something was asked of a stream that is closed (or was never opened) for it."""


class RequestReceived:
    """A request's header section. `ended`: it came with END_STREAM (no body)."""

    __slots__ = ("ended", "headers", "stream_id")

    def __init__(self, stream_id: int, headers: list[tuple[bytes, bytes]], ended: bool) -> None:
        self.stream_id = stream_id
        self.headers = headers
        self.ended = ended


class TrailersReceived:
    """A request's trailer section; StreamEnded follows."""

    __slots__ = ("headers", "stream_id")

    def __init__(self, stream_id: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.stream_id = stream_id
        self.headers = headers


class DataReceived:
    """Body bytes. `flow_controlled_length` (padding included) is what the receiver gives
    back with `acknowledge_received_data` once it took them."""

    __slots__ = ("data", "ended", "flow_controlled_length", "stream_id")

    def __init__(self, stream_id: int, data: bytes, length: int, ended: bool) -> None:
        self.stream_id = stream_id
        self.data = data
        self.flow_controlled_length = length
        self.ended = ended


class StreamEnded:
    """The client's END_STREAM: its side of the stream is done."""

    __slots__ = ("stream_id",)

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id


class StreamReset:
    """The client reset a stream (RST_STREAM)."""

    __slots__ = ("error_code", "stream_id")

    def __init__(self, stream_id: int, error_code: int) -> None:
        self.stream_id = stream_id
        self.error_code = error_code


class StreamInvalid:
    """A stream error of the client's (RFC 9113 §5.4.2): the RST_STREAM is already queued
    and the stream forgotten; `why` is for the log."""

    __slots__ = ("error_code", "stream_id", "why")

    def __init__(self, stream_id: int, error_code: int, why: str) -> None:
        self.stream_id = stream_id
        self.error_code = error_code
        self.why = why


class WindowUpdated:
    """The client gave window back: on a stream, or on the connection (stream id 0)."""

    __slots__ = ("delta", "stream_id")

    def __init__(self, stream_id: int, delta: int) -> None:
        self.stream_id = stream_id
        self.delta = delta


class ControlReceived:
    """A frame that asks work of us but carries no request: PING, SETTINGS, PRIORITY, a
    RST_STREAM or WINDOW_UPDATE for a closed stream, an unknown type. Counted by the
    adapter against floods."""

    __slots__ = ("kind",)

    def __init__(self, kind: str) -> None:
        self.kind = kind


class SettingsAcknowledged:
    """The client acknowledged our SETTINGS: they apply from here on."""

    __slots__ = ()


class ConnectionTerminated:
    """The client sent GOAWAY."""

    __slots__ = ("error_code", "last_stream_id")

    def __init__(self, error_code: int, last_stream_id: int) -> None:
        self.error_code = error_code
        self.last_stream_id = last_stream_id
