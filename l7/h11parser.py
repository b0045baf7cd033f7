"""h11 behind httptools' parser interface, so the HTTP/1.1 adapter can run on either.

httptools (llhttp) is the default: it parses a request head in 2-5 us here against h11's
60-150 (../shared/research/python-peers.md, and bench/RESULTS.md for the whole hop). h11 is
kept as the pure-Python choice (`[listener.NAME.http] parser = "h11"`): no C extension, and a
second, independent reading of the same bytes when one parser is suspected of a bug.

h11 is more lenient than llhttp in places RFC 9112 allows a choice: it unfolds obs-fold lines
and accepts a bare LF as a line end. The smuggling defences must not depend on the parser, so
the raw head is also checked with `l7.validate.check_raw_head`, which refuses both.
h11 errors become `httptools.HttpParserError` (a head too long becomes 431), so the adapter
handles both parsers the same way.
"""

from __future__ import annotations

from typing import Any

import h11
import httptools

from l4lb.errors import RemoteProtocolError
from l7.validate import check_raw_head

__all__ = ["H11BodyReader", "H11RequestParser"]


class H11RequestParser:
    """Calls `on_message_begin`, `on_url`, `on_header`, `on_headers_complete`, `on_body` and
    `on_message_complete` on `protocol`, as `httptools.HttpRequestParser` does."""

    def __init__(self, protocol: Any, max_head: int = 65536) -> None:
        self.protocol = protocol
        self.max_head = max_head
        self.conn = self._new()
        self.raw = bytearray()  # the head so far, for check_raw_head
        self.in_head = True
        self.method = b""
        self.version = "1.1"
        self.keep_alive = True
        self.upgrade = False

    def _new(self) -> h11.Connection:
        return h11.Connection(h11.SERVER, max_incomplete_event_size=self.max_head)

    # -- the httptools interface -------------------------------------------------------------

    def get_method(self) -> bytes:
        return self.method

    def get_http_version(self) -> str:
        return self.version

    def should_keep_alive(self) -> bool:
        return self.keep_alive

    def should_upgrade(self) -> bool:
        return self.upgrade

    def decline_upgrade(self) -> None:
        """The adapter does not allow this request's upgrade (l7.upgrade): when it ends, what
        follows is parsed as the next request instead of raising HttpParserUpgrade."""
        self.upgrade = False

    def feed_data(self, data: bytes) -> None:
        if self.in_head:
            if not self.raw and data.strip(b"\r\n"):
                self.protocol.on_message_begin()  # as llhttp: at the first byte of a head
            self.raw += data
        self.conn.receive_data(data)
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as exc:
                if "too long" in str(exc).lower() or "too large" in str(exc).lower():
                    raise RemoteProtocolError("request header fields too large", 431) from None
                raise httptools.HttpParserError(str(exc)) from None
            if event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
                return
            if event is h11.PAUSED:
                trailing = self.conn.trailing_data[0]
                if self.upgrade:
                    raise httptools.HttpParserUpgrade(max(0, len(data) - len(trailing)))
                # The request is complete: parse what follows with a fresh connection
                # (the adapter writes responses itself, so h11's cycle never advances).
                self.conn = self._new()
                self.raw = bytearray()
                self.in_head = True
                if not trailing:
                    return
                self.protocol.on_message_begin()
                self.raw += trailing
                self.conn.receive_data(trailing)
                continue
            self._event(event)

    def _event(self, event: Any) -> None:
        protocol = self.protocol
        if isinstance(event, h11.Request):
            end = self.raw.find(b"\r\n\r\n")
            check_raw_head(bytes(self.raw[: end + 4] if end >= 0 else self.raw))
            self.in_head = False
            self.raw = bytearray()
            self.method = event.method
            self.version = event.http_version.decode()
            connection = [v.lower() for n, v in event.headers if n == b"connection"]
            tokens = {t.strip() for v in connection for t in v.split(b",")}
            if self.version == "1.0":
                self.keep_alive = b"keep-alive" in tokens
            else:
                self.keep_alive = b"close" not in tokens
            self.upgrade = b"upgrade" in tokens and any(n == b"upgrade" for n, _ in event.headers)
            protocol.on_url(event.target)
            for name, value in event.headers.raw_items():
                protocol.on_header(name, value)
            protocol.on_headers_complete()
        elif isinstance(event, h11.Data):
            protocol.on_body(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            for name, value in event.headers.raw_items():  # trailers, as llhttp gives them
                protocol.on_header(name, value)
            protocol.on_message_complete()


class H11BodyReader:
    """Stands in for a connection's httptools parser while it reads one request body that
    llhttp skipped, then puts that parser back and feeds it what follows.

    httptools takes any request with `Connection: upgrade` and Upgrade for an upgrade, ends
    the message at its head whatever Content-Length or chunked say, and stops there. When the
    adapter declines the upgrade (l7.upgrade), the body must still be read as a body, or its
    bytes would be parsed as the next request (a desync). h11 reads it, told the framing by a
    made-up head; `on_body` and `on_message_complete` go to `protocol` as the parser's would.
    """

    def __init__(self, protocol: Any, parser: Any, chunked: bool, length: int) -> None:
        self.protocol = protocol
        self.parser = parser
        self.conn = h11.Connection(h11.SERVER)
        framing = b"transfer-encoding: chunked" if chunked else b"content-length: %d" % length
        self.conn.receive_data(b"POST / HTTP/1.1\r\nhost: x\r\n" + framing + b"\r\n\r\n")
        self.conn.next_event()  # the made-up Request

    def feed_data(self, data: bytes) -> None:
        self.conn.receive_data(data)
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise httptools.HttpParserError(f"invalid body: {exc}") from None
            if event is h11.NEED_DATA:
                return
            if isinstance(event, h11.Data):
                self.protocol.on_body(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                rest = self.conn.trailing_data[0]
                for name, value in event.headers.raw_items():
                    self.protocol.on_header(name, value)
                self.protocol.parser = self.parser
                self.protocol.on_message_complete()
                if rest:
                    try:
                        self.parser.feed_data(rest)
                    except httptools.HttpParserUpgrade as exc:  # offsets are into `data`
                        offset = exc.args[0] if exc.args else len(rest)
                        raise httptools.HttpParserUpgrade(len(data) - len(rest) + offset) from None
                return
