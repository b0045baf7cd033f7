"""The HTTP/1.1 adapter on the client side: wire bytes to `Request` and exchanges, and back.

Parsing is llhttp through httptools (2-5 us per request here, against 60-150 for h11;
../shared/research/python-peers.md). llhttp is strict, and every request head also passes
`l7.validate.check_request_head`, so the smuggling defences do not depend on the parser's
leniency: Content-Length with Transfer-Encoding, differing Content-Lengths, bad chunk sizes,
obs-fold and bare CR/LF are all refused with 400 before anything is forwarded.

Requests on one connection are answered in order. A pipelined request is parsed and queued,
and reading pauses until the one before it is done, so a client cannot queue without bound.
Timeouts: `header_timeout` from the first byte of a request to the end of its head (408),
`body_timeout` between two reads of a body (408), `keepalive_timeout` while idle (closed
quietly). After a reload, the next request on an open connection uses the new config.

The connection has one deadline on a lazy timer (`l7.deadline`). The header timeout is armed
only when a read ends inside a request head, so a keep-alive request that arrives whole costs
no timer at all.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Any, Final

import httptools

from l4lb.errors import RemoteProtocolError
from l7.deadline import Deadline
from l7.exchange import Exchange
from l7.forwarded import new_request_id, request_id_from
from l7.h1errors import fail
from l7.h1tunnel import decline_upgrade, end_tunnel, tunnel, tunnel_eof, upgraded
from l7.h1wire import chunk, last_chunk, response_head, simple_response
from l7.h11parser import H11RequestParser
from l7.model import Request, Response
from l7.router import host_key
from l7.target import origin_form, with_host
from l7.upgrade import allowed_upgrade
from l7.validate import check_request_head

if TYPE_CHECKING:
    from collections.abc import Callable

    from l7.engine import HttpEngine
    from l7.upstream import UpstreamConn

__all__ = ["H1Server"]

log: Final = logging.getLogger("l4lb")

_HOST_KEYS: Final[dict[bytes, str]] = {}  # Host value -> routing key: clients repeat a few hosts


def _host_key(raw: bytes) -> str:
    key = _HOST_KEYS.get(raw)
    if key is None:
        if len(_HOST_KEYS) >= 1024:
            _HOST_KEYS.clear()
        key = _HOST_KEYS[raw] = host_key(raw.decode("latin-1"))
    return key


class H1Server(asyncio.Protocol):
    """One client connection. `engine_of()` returns the listener's current engine."""

    def __init__(
        self, engine_of: Callable[[], HttpEngine], client: tuple[str, int], on_close=None
    ) -> None:
        self.engine_of = engine_of
        self.client = client
        self.on_close = on_close
        self.transport: asyncio.Transport | None = None
        settings = engine_of().settings
        if settings.parser == "h11":
            max_head = settings.max_header_bytes + settings.max_uri + 1024
            self.parser: Any = H11RequestParser(self, max_head)
        else:
            self.parser = httptools.HttpRequestParser(self)
        self.exchanges: deque[Exchange] = deque()
        self.building: Exchange | None = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_bytes = 0
        self.requests = 0
        self.timer_kind = ""  # what the deadline is for; "" none
        self.timer_seconds = 0.0
        self.in_head = False  # a request head has begun and not ended
        # the engine of the request being read (set at its start)
        self.engine: HttpEngine = engine_of()
        # (engine, Host, forwarding_lines) of the last request: a client keeps its Host.
        self.forwarding: tuple[Any, bytes, bytes] = (None, b"", b"")
        self.body_seen = False
        # An upgrade declined (l7.upgrade) under httptools: `declined` until the parser stops
        # after it; `skipped` is (chunked, length) of the body llhttp skipped, and `hold_end`
        # ignores the end of message llhttp reports before that body.
        self.declined = False
        self.skipped: tuple[bool, int] | None = None
        self.hold_end = False
        self.closed = False
        self.closing = False
        self.draining = False
        self.paused = False
        self.peer: UpstreamConn | None = None  # set when the connection became a tunnel
        self.client_ended = False  # tunnel: the client's EOF was passed on to the server
        self.server_ended = False  # tunnel: the server's EOF was passed on to the client
        self.touched = False
        self.corked: list[bytes] | None = None  # writes held to leave as one
        self.loop = asyncio.get_event_loop()
        self.deadline = Deadline(self.loop, self._expired)

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.arm("keepalive", self.engine_of().settings.header_timeout)

    def data_received(self, data: bytes) -> None:
        if self.peer is not None:
            self.touched = True
            self.peer.write(data)
            return
        if self.closing:
            return
        while True:
            try:
                self.parser.feed_data(data)
                if self.in_head and self.timer_kind == "keepalive":
                    self.arm("header", self.engine_of().settings.header_timeout)
            except httptools.HttpParserUpgrade as exc:
                data = upgraded(self, data, exc.args[0] if exc.args else len(data))
                if data and not self.closing:
                    continue  # after a declined upgrade: the next request
            except httptools.HttpParserError as exc:
                cause = exc.__context__
                if isinstance(cause, RemoteProtocolError):  # raised by one of our callbacks
                    fail(self, cause.status_hint, str(cause))
                elif isinstance(exc, httptools.HttpParserCallbackError):  # a bug of ours
                    log.error("http %s:%d: internal error", *self.client[:2], exc_info=cause)
                    fail(self, 500, "internal error")
                else:
                    fail(self, 400, f"malformed request: {exc}")
            except RemoteProtocolError as exc:
                fail(self, exc.status_hint, str(exc))
            except Exception:  # a bug: it costs this connection, logged, and nothing else
                log.exception("http %s:%d: internal error", self.client[0], self.client[1])
                fail(self, 500, "internal error")
            return

    def eof_received(self) -> bool:
        if self.peer is not None:
            tunnel_eof(self, "client")
            return True
        return False  # a half-closed HTTP client: finish and close

    def pause_writing(self) -> None:
        if self.peer is not None:
            self.peer.pause_reading()
        elif self.exchanges and self.exchanges[0].upstream is not None:
            self.exchanges[0].upstream.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None:
            self.peer.resume_reading()
        elif self.exchanges and self.exchanges[0].upstream is not None:
            self.exchanges[0].upstream.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.cancel_timer()
        if self.peer is not None:
            if exc is None:
                end_tunnel(self)  # a TLS client's close: the server still gets what is buffered
            else:
                self.peer.abort()
        for ex in self.exchanges:
            ex.abort()
        self.exchanges.clear()
        # The parser refers back to this object, so it is freed by the collector, not by
        # reference counting: it must not keep the transport (and a TLS connection's
        # buffers, ~300 KB with uvloop) until then.
        self.transport = None
        if self.on_close is not None:
            self.on_close(self)

    # -- httptools callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.engine = self.engine_of()  # a reload applies from the next request on
        self.url = b""
        if self.headers:  # what a refused request left (on_headers_complete hands the
            self.headers = []  # head's list to the request and starts one for trailers)
        self.head_bytes = 0
        self.in_head = True  # data_received arms the header timeout if the read ends here

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self.engine.settings.max_uri:
            raise RemoteProtocolError("request-target too long", 414)

    def on_header(self, name: bytes, value: bytes) -> None:
        settings = self.engine.settings
        self.head_bytes += len(name) + len(value) + 4
        headers = self.headers
        headers.append((name.lower(), value))
        if self.head_bytes > settings.max_header_bytes or len(headers) > settings.max_headers:
            raise RemoteProtocolError("request header fields too large", 431)

    def on_headers_complete(self) -> None:
        self.in_head = False
        engine = self.engine
        settings = engine.settings
        parser = self.parser
        method_bytes: bytes = parser.get_method()
        method = method_bytes.decode("latin-1")
        version = parser.get_http_version()
        target = self.url.decode("latin-1")
        headers = self.headers
        self.headers = []  # what llhttp reports after the body: its trailer section
        host, length, chunked, expect = check_request_head(
            method,
            target,
            headers,
            version,
            settings.max_uri,
            settings.max_header_bytes,
            settings.max_headers,
        )
        body = "chunked" if chunked else "length" if length > 0 else "none"
        if expect:
            # Answered here, as nginx does (RFC 9110 §10.1.1): the client sends its body at
            # once, and the server never sees an Expect it might not honour.
            headers = [(n, v) for n, v in headers if n != b"expect"]
        url = self.url
        if url[0] != 47 and method != "CONNECT" and target != "*":  # absolute-form (not "/")
            host, target = origin_form(method, target)
            headers = with_host(headers, host)
            url = target.encode("latin-1")
        elif host is None:
            host = b""
        key = _host_key(host)
        request = Request(
            method,
            target,
            headers,
            key,
            engine.scheme,
            version,
            self.client,
            host,
            None if chunked else length,
        )
        upgrade = False
        if parser.should_upgrade() and method != "CONNECT":
            upgrade = allowed_upgrade(headers, version, engine.upgrades)
            if not upgrade:
                decline_upgrade(self, chunked, length)
        self.requests += 1
        keep_alive = (
            parser.should_keep_alive()
            and self.requests < settings.max_requests
            and not self.draining
        )
        if length > 0 and settings.max_body and length > settings.max_body:
            raise RemoteProtocolError("request body too large", 413)
        request_id = request_id_from(headers) or new_request_id()
        line = method_bytes + b" " + url + b" HTTP/1.1"
        ex = Exchange(self, engine, request, keep_alive, body, request_id, upgrade, host, line)
        self.building = ex
        self.exchanges.append(ex)
        if expect and body != "none" and version == "1.1" and len(self.exchanges) == 1:
            self.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if body != "none":
            self.arm("body", settings.body_timeout)
        else:
            self.disarm()
        if len(self.exchanges) == 1:
            ex.start()
        else:
            self.pause_reading()  # pipelined: one at a time

    def on_body(self, body: bytes) -> None:
        self.body_seen = True
        if self.building is not None and not self.building.finished:
            self.building.body_chunk(body)

    def on_message_complete(self) -> None:
        if self.hold_end:  # llhttp's early end of a declined upgrade: its body comes next
            self.hold_end = False
            return
        ex, self.building = self.building, None
        if self.timer_kind == "body":
            self.disarm()
        if self.headers:  # the trailer section of a chunked body
            trailers, self.headers = self.headers, []
            if ex is not None:
                ex.body_trailers(trailers)
        if ex is not None and not ex.finished:
            ex.body_complete()
        elif ex is not None:
            ex.body_done = True

    # -- the response side (l7.sides.ClientStream) -------------------------------------------

    def send_interim(self, ex: Exchange, response: Response) -> None:
        if ex.request.version == "1.1":  # an HTTP/1.0 client would not know a 1xx
            self.write(response_head(response, b"", b""))

    def send_head(self, ex: Exchange, response: Response) -> None:
        """Frame the response for this client: Content-Length kept, otherwise chunked to an
        HTTP/1.1 client and close-delimited to an HTTP/1.0 one (RFC 9112 §6)."""
        framing = b""
        if ex.framing == "none":
            pass
        elif response.length is not None:
            ex.framing = "length"
        elif ex.request.version == "1.1":
            ex.framing = "chunked"
            framing = b"transfer-encoding: chunked"
        else:
            ex.framing = "close"
            ex.close_after = True
        if response.status == 101:
            connection = b""  # the server's Connection: upgrade went through the filter
        elif ex.close_after:
            connection = b"connection: close"
        else:
            connection = b"connection: keep-alive"
        self.write(response_head(response, framing, connection))

    def send_data(self, ex: Exchange, data: bytes) -> None:
        self.write(chunk(data) if ex.framing == "chunked" else data)

    def send_end(self, ex: Exchange) -> None:
        if ex.framing == "chunked":
            self.write(last_chunk(ex.response_trailers))

    def send_simple(self, ex: Exchange, status: int, fields: list, body: bytes) -> None:
        connection = b"connection: close" if ex.close_after else b"connection: keep-alive"
        self.write(simple_response(status, fields, body, connection))

    # -- used by exchanges -------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.corked is not None:
            self.corked.append(data)
        elif self.transport is not None and not self.closed:
            self.transport.write(data)

    def cork(self) -> None:
        """Hold writes until `uncork`: a response head and body that come from one read of
        the server leave in one system call instead of two or three."""
        if self.corked is None:
            self.corked = []

    def uncork(self) -> None:
        held, self.corked = self.corked, None
        if held and self.transport is not None and not self.closed:
            self.transport.write(held[0] if len(held) == 1 else b"".join(held))

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed and not self.paused:
            self.transport.pause_reading()
            self.paused = True

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed and self.paused:
            self.transport.resume_reading()
            self.paused = False

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()

    def tunnel(self, upstream: UpstreamConn | None, pending: bytes) -> None:
        tunnel(self, upstream, pending)  # (l7/h1tunnel.py)

    def tunnel_eof(self, side: str) -> None:
        tunnel_eof(self, side)

    def end_tunnel(self) -> None:
        end_tunnel(self)

    def exchange_done(self, ex: Exchange) -> None:
        if self.exchanges and self.exchanges[0] is ex:
            self.exchanges.popleft()
        if self.peer is not None:
            return
        if ex.close_after or self.closing or not ex.body_done:
            self.close()  # also when answered before its body was read: nothing to resync on
            return
        self.resume_reading()
        if self.exchanges:
            self.exchanges[0].start()
        elif self.draining:
            self.close()
        elif self.in_head:  # the next request's head is partly here
            self.arm("header", self.engine_of().settings.header_timeout)
        else:
            self.arm("keepalive", self.engine_of().settings.keepalive_timeout)

    # -- errors, timers, the end -------------------------------------------------------------

    def close(self) -> None:
        self.closing = True
        self.uncork()  # what is held goes out before the close
        self.cancel_timer()
        if self.transport is not None and not self.closed:
            self.transport.close()  # after what is buffered is written

    def drain(self, grace: float) -> None:
        """Shutdown: requests in flight finish with `Connection: close`; an idle connection is
        closed after `grace` seconds (a request racing the close would otherwise be reset)."""
        self.draining = True
        if not self.exchanges and self.peer is None:
            self.arm("keepalive", grace)

    def arm(self, kind: str, seconds: float) -> None:
        """Set the connection's deadline: `kind` ends `seconds` from now."""
        self.timer_kind = kind
        self.timer_seconds = seconds
        self.deadline.set(seconds)

    def disarm(self) -> None:
        self.timer_kind = ""
        self.deadline.clear()

    def cancel_timer(self) -> None:
        self.timer_kind = ""
        self.deadline.cancel()

    def _expired(self) -> None:
        kind = self.timer_kind
        if not kind or self.closed:
            return
        self.timer_kind = ""
        seconds = self.timer_seconds
        if kind == "keepalive":
            self.close()
        elif kind == "header":
            fail(self, 408, "request head not received in time")
        elif kind == "body":
            if self.body_seen:
                self.body_seen = False
                self.arm("body", seconds)
            elif self.exchanges and self.exchanges[0].head_sent:
                self.abort()
            else:
                fail(self, 408, "request body not received in time")
        elif kind == "tunnel":
            if self.touched:
                self.touched = False
                self.arm("tunnel", seconds)
            else:
                self.abort()
