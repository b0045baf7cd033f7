"""Connections to servers for the HTTP pipeline: keep-alive reuse, response parsing.

One `UpstreamPool` per server keeps idle keep-alive connections (at most `max_idle`, each
closed after `idle_timeout` unused), so most requests skip the TCP (and TLS) handshake, as
nginx's `keepalive` and Envoy's connection pools do. A connection serves one exchange at a
time (HTTP/1.1 without pipelining towards servers, like nginx and Envoy). Responses are
parsed with httptools (llhttp): the fastest parser measured here (../shared/research), and
the one uvicorn picks by default.

A new connection is made by a task (`loop.create_connection`), kept in the pool's
`connecting` set until it is done, so that a shutdown can cancel it; everything after that is
Protocol callbacks. The pool keeps no policy: the exchange decides what to retry and when a
connection may go back to the pool.

Each connection has one deadline (`l7.deadline`, a lazy timer): the response timeout while it
serves an exchange, the idle timeout while it waits in the pool; a request then costs no
timer at all.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import httptools

from l7.deadline import Deadline
from l7.forwarded import HOP_BY_HOP
from l7.h1wire import chunk, last_chunk, request_head
from l7.model import Response, split_line

if TYPE_CHECKING:
    from l7.exchange import Exchange  # the compiled build calls it natively (setup.py)

__all__ = ["UpstreamConn", "UpstreamPool"]

log: Final = logging.getLogger("l4lb")


# A field name as a server sent it -> the start of its line (`name: `, lower-cased), or b""
# for a hop-by-hop field. Bounded: only short names are kept, and the table starts again
# when full (a server that invents names costs itself the slow path, nothing more).
_PREFIXES: Final[dict[bytes, bytes]] = {}
_CONTENT_LENGTH: Final = b"content-length: "


def _line_prefix(name: bytes) -> bytes:
    lower = name.lower()
    if lower in HOP_BY_HOP:
        prefix = b""
    elif lower == b"content-length":
        prefix = _CONTENT_LENGTH
    else:
        prefix = lower + b": "
    if len(name) <= 64:
        if len(_PREFIXES) >= 512:
            _PREFIXES.clear()
        _PREFIXES[name] = prefix
    return prefix


class UpstreamConn(asyncio.Protocol):
    """One connection to a server. Feeds response bytes to a fresh parser per response and
    reports head, body chunks and completion to the exchange that holds it."""

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.exchange: Exchange | None = None
        self.parser: Any = None
        # The response head being read: its end-to-end fields already as `name: value`
        # lines (names lower-cased), its hop-by-hop fields apart, and its Content-Length.
        self.lines: list[bytes] = []
        self.hop: list[tuple[bytes, bytes]] = []
        self.length: bytes | None = None
        self.closed = False
        self.reusable = False
        self.deadline = Deadline(pool.loop, self._expired)  # response or idle timeout
        self.tunnel = False  # after a 101: raw bytes both ways
        self.until_close = False  # the response body ends when the server closes
        self.paused_by_peer = False

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        ex = self.exchange
        if ex is None:
            # A server must not speak unasked (RFC 9112 §9.3): not reusable.
            self.abort()
            return
        if self.tunnel:
            ex.on_tunnel_data(data)
            return
        client = ex.conn
        client.cork()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0] if exc.args else len(data)
            self.tunnel = True
            if self.exchange is not None:
                self.exchange.on_response_upgrade(data[offset:])
        except httptools.HttpParserError as exc:
            self.reusable = False
            if self.exchange is not None:
                self.exchange.on_upstream_error(f"bad response: {exc}")
        finally:
            client.uncork()

    def eof_received(self) -> bool:
        if self.exchange is not None and self.tunnel:
            return self.exchange.on_tunnel_eof("server")
        return False

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.pause_client_reading()

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.resume_client_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        self.transport = None  # (held in the parser's cycle otherwise: see H1Server)
        self.deadline.cancel()
        self.pool.forget(self)
        ex, self.exchange = self.exchange, None
        if ex is not None:
            if self.tunnel:
                ex.on_tunnel_eof("server_lost" if exc is None else "server_reset")
            elif self.until_close:
                ex.on_response_complete()  # a close-delimited body ends with the connection
            else:
                ex.on_upstream_error("server closed the connection")

    # -- httptools callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.exchange is None:
            # More bytes after the response, in the same read (RFC 9112 §9.3: a server must
            # not send unasked). They must never be read as the next request's response.
            self.reusable = False
            self.pool.forget(self)
            self.abort()

    def on_header(self, name: bytes, value: bytes) -> None:
        # Sorted and serialized here, in the one call per field there is anyway: the usual
        # response then needs no second pass over its fields (bench/RESULTS.md). A server
        # sends the same few names every time: their lines' prefixes are looked up as sent.
        prefix = _PREFIXES.get(name)
        if prefix is None:
            prefix = _line_prefix(name)
        if not prefix:
            self.hop.append((name.lower(), value))
            return
        if prefix is _CONTENT_LENGTH:
            self.length = value
        self.lines.append(prefix + value)

    def on_headers_complete(self) -> None:
        parser = self.parser
        status = parser.get_status_code()
        lines, hop, length = self.lines, self.hop, self.length
        self.lines, self.hop, self.length = [], [], None
        self.reusable = parser.should_keep_alive()
        if length is None and status >= 200 and status != 204 and status != 304:
            for name, _ in hop:
                if name == b"transfer-encoding":
                    break
            else:
                self.until_close = True  # no framing: the body ends when the server closes
        if self.exchange is not None:
            self.exchange.on_response_head(Response(status, None, b"", lines, length), hop)

    def on_body(self, body: bytes) -> None:
        if body and self.exchange is not None:
            self.exchange.on_response_body(body)

    def on_message_complete(self) -> None:
        self.until_close = False
        ex = self.exchange
        if ex is not None:
            if self.lines:  # fields after the head: a chunked body's trailer section
                ex.on_response_trailers([split_line(line) for line in self.lines])
                self.lines = []
            ex.on_response_complete()

    # -- used by the exchange ----------------------------------------------------------------

    def start(self, exchange: Exchange, fresh: bool = False) -> None:
        """Give the connection to `exchange` for one request/response. The parser of the last
        response goes on (llhttp resets itself after a complete message) unless `fresh`."""
        self.deadline.clear()
        self.exchange = exchange
        if fresh or self.parser is None:
            self.parser = httptools.HttpResponseParser(self)
        self.lines, self.hop, self.length = [], [], None
        self.reusable = False
        self.until_close = False
        if self.transport is not None and self.paused_by_peer:
            self.transport.resume_reading()
            self.paused_by_peer = False

    def skip_body(self) -> None:
        """The response to HEAD (or a 204/304) has no body whatever its headers say; llhttp
        cannot be told the request method, so the parser is dropped for the next response."""
        self.parser = None

    def send_request(self, exchange: Exchange) -> None:
        self.write(request_head(exchange))

    def send_body(self, data: bytes, chunked: bool) -> None:
        self.write(chunk(data) if chunked else data)

    def end_body(self, chunked: bool) -> None:
        if chunked:
            ex = self.exchange
            self.write(last_chunk(ex.request_trailers if ex is not None else None))

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()
            self.paused_by_peer = True

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed and self.paused_by_peer:
            self.transport.resume_reading()
            self.paused_by_peer = False

    def abort(self) -> None:
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.transport.abort()

    def close(self) -> None:
        """Close once what is buffered is written (the end of a tunnel). A server that does
        not read what is left is aborted after the pool's idle timeout."""
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.transport.close()
            self.arm(self.pool.idle_timeout)

    def release(self) -> None:
        """The exchange is done with it: back to the pool if it can carry another request."""
        self.exchange = None
        if self.reusable and not self.closed and not self.tunnel:
            self.pool.put(self)
        else:
            self.parser = None
            self.abort()

    # -- the deadline ------------------------------------------------------------------------

    def arm(self, seconds: float) -> None:
        """Set the deadline `seconds` from now (response timeout, or idle in the pool)."""
        self.deadline.set(seconds)

    def disarm(self) -> None:
        self.deadline.clear()

    def _expired(self) -> None:
        if self.closed:
            return
        ex = self.exchange
        if ex is None:
            self.abort()  # idle in the pool for idle_timeout
        else:
            ex.response_timeout()


class UpstreamPool:
    """Idle keep-alive connections to one server, and the making of new ones."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        host: str,
        port: int,
        *,
        max_idle: int,
        idle_timeout: float,
        tls: ssl.SSLContext | None = None,
        sni: str | None = None,
        connect_timeout: float = 5.0,
    ) -> None:
        self.loop = loop
        self.host = host
        self.port = port
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self.tls = tls
        self.sni = sni  # server_hostname: the SNI, and the name checked unless tls pins one
        self.describe: Callable[[BaseException], str] | None = None  # a TLS failure, for logs
        self.connect_timeout = connect_timeout
        self.idle: list[UpstreamConn] = []
        self.connecting: set[asyncio.Task] = set()  # connects under way (see `cancel_connects`)
        self.opened = 0  # connections made, for tests and stats
        # The server's in-flight requests (its `active`), read when a connection comes back:
        # as many idle connections as the peak of the last `idle_timeout` are kept (at least
        # `max_idle`, at most `max_idle_ceiling`), so steady load above `max_idle` concurrent
        # requests does not close and reopen connections (bench/RESULTS.md).
        self.server: Any = None
        self.max_idle_ceiling = max_idle
        self.peak = 0
        self.peak_at = 0.0

    def take(self) -> UpstreamConn | None:
        """An idle connection, most recently used first (it is the least likely to have been
        closed by the server's own keep-alive timeout)."""
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed:
                return conn
        return None

    def connect(self, done: Callable[[UpstreamConn | None, str], None]) -> asyncio.Task:
        """Open a new connection; `done(conn, "")` or `done(None, reason)` is called once
        (`"shutdown"` when `cancel_connects` cancelled it)."""
        task = self.loop.create_task(self._connect(done))
        self.connecting.add(task)
        task.add_done_callback(self.connecting.discard)
        return task

    def cancel_connects(self) -> None:
        for task in list(self.connecting):
            task.cancel()

    async def _connect(self, done: Callable[[UpstreamConn | None, str], None]) -> None:
        try:
            _, conn = await asyncio.wait_for(
                self.loop.create_connection(
                    lambda: UpstreamConn(self),
                    self.host,
                    self.port,
                    ssl=self.tls,
                    server_hostname=(self.sni or self.host) if self.tls else None,
                ),
                self.connect_timeout,
            )
        except asyncio.CancelledError:
            done(None, "shutdown")  # the exchange gives back what it holds
            raise
        except TimeoutError:
            done(None, "connect_timeout")
            return
        except (OSError, ssl.SSLError) as exc:
            reason = "refused" if isinstance(exc, ConnectionRefusedError) else "connect_failed"
            if isinstance(exc, ssl.SSLError) and self.describe is not None:
                reason = "tls_failed"
                why = self.describe(exc)
                log.warning("server %s:%d: TLS handshake failed: %s", self.host, self.port, why)
            done(None, reason)
            return
        self.opened += 1
        done(conn, "")

    def put(self, conn: UpstreamConn) -> None:
        idle = self.idle
        server = self.server
        if server is not None and server.active > self.peak:
            self.peak, self.peak_at = server.active, self.loop.time()  # a new peak: rare
        if len(idle) >= self.max_idle and not self._room_above_max_idle(len(idle)):
            conn.abort()
            return
        idle.append(conn)
        conn.arm(self.idle_timeout)

    def _room_above_max_idle(self, kept: int) -> bool:
        """Past `max_idle`: room while fewer are kept than the peak of requests in flight in
        the last `idle_timeout` (at most `max_idle_ceiling`). Only here is the clock read."""
        if self.server is None:
            return False
        now = self.loop.time()
        if now - self.peak_at > self.idle_timeout:
            self.peak, self.peak_at = self.server.active, now  # the old peak has passed
        return kept < min(self.peak, self.max_idle_ceiling)

    def forget(self, conn: UpstreamConn) -> None:
        if conn in self.idle:
            self.idle.remove(conn)

    def close(self) -> None:
        while self.idle:
            self.idle.pop().abort()
