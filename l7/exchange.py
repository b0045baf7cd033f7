"""One request through the pipeline: route, choose a server, forward, stream the answer back.

The pipeline is protocol-neutral: it sees the `l7.model` request and response and talks to
a `ClientStream` (HTTP/1.1 connection or HTTP/2 stream) and a `ServerStream` (an HTTP/1.1
server connection) through the methods in `l7.sides`; how a head is written and a body
framed is the adapters' business. Stages run in the order DESIGN.md fixes (limits are
checked by the adapter before an exchange exists): route → upstream (pooled keep-alive
connection, retries, breaker) → response headers → compression (l7/compress.py). Bodies
stream both ways in chunks as they arrive; a request body is buffered only until the server
connection is ready, and reading from the client pauses while that buffer is over
`_BODY_BUFFER`. Backpressure in both
directions pauses the reading side while the writing side's buffer is full.

Everything runs in loop callbacks; the only task is the one that opens a new server
connection when the pool has no idle one.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from l4lb.attempt import Attempt
from l7.budget import is_retryable
from l7.cache.stage import CacheState, cache_begin
from l7.compress import Encoder, start_encoder
from l7.errors_page import error_response
from l7.forwarded import response_hop_by_hop_filter
from l7.model import Headers, Request, Response
from l7.router import apply_response_headers, render_redirect
from l7.routes import Forward, Redirect, Respond
from l7.trailers import forwardable_trailers
from l7.upgrade import accepted_upgrade
from l7.validate import BodyLimit
from l7.waf.stage import waf_start

if TYPE_CHECKING:
    from l4lb.pool import Pool
    from l4lb.server import Server
    from l7.engine import HttpEngine, ServerLink
    from l7.routes import HttpRoute
    from l7.sides import ClientStream, ServerStream

__all__ = ["Exchange"]

log = logging.getLogger("l4lb")

_BODY_BUFFER = 256 * 1024  # request body held while the server connection is being made
_NO_BODY_STATUSES = frozenset({204, 304})


class Exchange:
    """A request and its response. `conn` is the client side (`l7.sides.ClientStream`). One
    is made per request, so its fields are slots and only what every request needs is set up
    front. `body_kind` is "none", "length" or "chunked" (length not known in advance:
    chunked to an HTTP/1.1 server)."""

    __slots__ = (
        "attempt",
        "authority",
        "body_done",
        "body_kind",
        "body_limit",
        "body_sent",
        "bytes_out",
        "cache",
        "claims",
        "close_after",
        "conn",
        "connect_started",
        "connect_time",
        "encoder",
        "engine",
        "finished",
        "framing",
        "head_sent",
        "interim",
        "link",
        "pending",
        "pending_size",
        "pool",
        "replay",
        "replay_size",
        "request",
        "request_id",
        "request_line",
        "request_trailers",
        "response_time",
        "response_trailers",
        "route",
        "sent_at",
        "server",
        "started",
        "status",
        "target",
        "upgrade",
        "upgrade_rest",
        "upstream",
        "waf",
    )

    def __init__(
        self,
        conn: ClientStream,
        engine: HttpEngine,
        request: Request,
        keep_alive: bool,
        body: str,  # "none", "length" or "chunked"
        request_id: str,
        upgrade: bool = False,
        authority: bytes | None = None,
        request_line: bytes | None = None,
    ) -> None:
        self.conn = conn
        # The Host header as sent (port included), for X-Forwarded-Host and redirects.
        self.authority = authority if authority is not None else request.header(b"host") or b""
        self.engine = engine
        self.request = request
        self.body_kind = body
        self.request_id = request_id
        self.upgrade = upgrade
        self.started = time.monotonic()
        self.route: HttpRoute | None = None
        self.target = request.target
        # `METHOD target HTTP/1.1` as bytes, when the adapter has them (a route that rewrites
        # the target makes a new one).
        self.request_line = request_line
        self.pool: Pool | None = None
        self.server: Server | None = None
        self.link: ServerLink | None = None  # the server's upstream pool and breaker
        self.upstream: ServerStream | None = None
        # The tries on servers: what each holds (active count, breaker trial, retry budget)
        # and gives back; made once the request is routed to a pool.
        self.attempt: Attempt | None = None
        self.pending: list[bytes] = []  # request body waiting for the server connection
        self.pending_size = 0
        # The body so far, while small enough to resend; None for a request without one.
        self.replay: list[bytes] | None = None if body == "none" else []
        self.replay_size = 0
        self.body_sent = 0  # bytes written to the current server
        self.body_done = body == "none"
        max_body = engine.settings.max_body
        self.body_limit = BodyLimit(max_body) if max_body and body != "none" else None
        self.finished = False
        self.status = 0
        self.head_sent = False
        # How the response body goes to the client: "none" (the pipeline says there is no
        # body), else what the adapter chose ("length", "chunked", "close", "stream").
        self.framing = ""
        self.bytes_out = 0
        self.close_after = not keep_alive
        self.connect_started = 0.0
        self.connect_time = -1.0
        self.response_time = -1.0
        self.sent_at = 0.0
        self.upgrade_rest = b""  # client bytes after an Upgrade request's head
        self.interim = False  # a 1xx response is being relayed
        self.encoder: Encoder | None = None  # the compression stage's, for this response
        # Trailer fields (l7.trailers) after the request's and the response's bodies; each
        # side's adapter passes them on at the end of its body where its framing can carry them.
        self.request_trailers: Headers | None = None
        self.response_trailers: Headers | None = None
        self.claims: dict[str, Any] | None = None  # the JWT stage's: the token's claims
        self.waf: Any = None  # the WAF stage's l7.waf.stage.WafState (a held body, rule ids)
        self.cache: CacheState | None = None  # the cache stage's part (l7/cache/stage.py)

    # -- stage: route ------------------------------------------------------------------------

    def start(self) -> None:
        engine, request = self.engine, self.request
        if engine.redirect_https:
            location = f"https://{self.authority.decode('latin-1')}{request.target}"
            self.respond(301, b"", extra=[(b"location", location.encode("latin-1"))])
            return
        match = engine.router.match(request)
        if match is None:
            if engine.config.pool is None:
                self.error(404, "no route matched")
                return
            pool_name = engine.config.pool
            if engine.wafs and not waf_start(self, ""):
                return  # stage: WAF, the listener's (l7/waf/)
        else:
            self.route = route = match.route
            if route.jwt is not None and not engine.jwts[route.name].check(self):
                return  # stage: JWT (l7.jwtstage): answered 400/401/403/503, or held for keys
            if route.security is not None and not engine.guards[route.name].check(
                self, engine.registry.loop.time()
            ):
                return  # stage: the route's access rules and rate limits (l7.guard)
            if engine.wafs and not waf_start(self, route.name):
                return  # stage: WAF (l7/waf/)
            if match.target is not None:
                self.target = match.target
            action = route.action
            if isinstance(action, Respond):
                self.respond(
                    action.status,
                    action.body,
                    extra=[(b"content-type", action.content_type.encode())],
                )
                return
            if isinstance(action, Redirect):
                status, location = render_redirect(route, request)
                self.respond(status, b"", extra=[(b"location", location.encode("latin-1"))])
                return
            assert isinstance(action, Forward)
            pool_name = action.pool
            if route.cache and cache_begin(self, route.cache):
                return  # stage: cache lookup (answered, or waiting on another's fetch)
        self.pool = pool = engine.pools[pool_name]
        self.attempt = Attempt(pool.config.retries, engine.budget(pool))
        if self.waf is None or not self.waf.holding:
            self.forward()  # (else the WAF forwards once it has inspected the body)

    # -- stage: upstream ---------------------------------------------------------------------

    def forward(self) -> None:
        pool, engine, attempt = self.pool, self.engine, self.attempt
        assert pool is not None and attempt is not None
        now = engine.registry.loop.time()
        key = self.request.client[0].encode()
        while True:
            server = pool.pick(now, key, attempt.tried)
            if server is None:
                self.error(503, "no server available", retry_after=1)
                return
            link = engine.link(pool, server)
            if attempt.begin(server, link.breaker, now):
                break  # (a server whose breaker says no counts as tried)
        self.server = server
        self.link = link
        up = link.upstream
        conn = up.take()
        if conn is not None:
            self.attach(conn)
        else:
            self.connect_started = time.monotonic()
            up.connect(self.connected)

    def connected(self, conn: ServerStream | None, reason: str) -> None:
        if self.finished:
            if conn is not None:
                conn.abort()
            return
        if conn is None:
            self.attempt_failed("connect", reason)
            return
        self.attach(conn, connected=True)

    def attach(self, conn: ServerStream, connected: bool = False) -> None:
        """Send the request on `conn`: a pooled connection, or (`connected`) a new one, whose
        connect time goes to the stats. A pooled one did not connect: it records 0 in the
        access log and nothing in the connect-latency histogram."""
        assert self.server is not None and self.pool is not None and self.attempt is not None
        self.attempt.connected()
        if connected:
            self.connect_time = time.monotonic() - self.connect_started
            stats = self.engine.stats
            if stats is not None:
                stats.connect_latency(self.pool.name, self.server.name).observe(self.connect_time)
        else:
            self.connect_time = 0.0
        self.upstream = conn
        conn.start(self)
        conn.send_request(self)
        if self.pending:
            pending, self.pending, self.pending_size = self.pending, [], 0
            for chunk in pending:
                self.write_body(chunk)
        self.conn.resume_reading()
        if self.body_done:
            if self.body_kind != "none":
                conn.end_body(self.body_kind == "chunked")
            self.request_sent()

    def attempt_failed(self, phase: str, reason: str) -> None:
        """A server failed before answering: retry elsewhere when allowed, else 502/504."""
        server, attempt = self.server, self.attempt
        assert server is not None and attempt is not None
        self.upstream = None
        self.breaker_result(attempt.fail(self.engine.registry.loop.time(), phase)[0])
        replayable = self.body_sent == 0 or self.replay is not None
        allowed = is_retryable(self.request.method, phase, None, (), replayable)  # type: ignore[arg-type]
        if attempt.retry(allowed, phase != "connect"):
            self.replay_body()
            self.forward()
            return
        status = 504 if reason in ("connect_timeout", "response_timeout") else 502
        self.error(status, f"server {server.name}: {reason}")

    def replay_body(self) -> None:
        """Queue what the client sent so far for the next server."""
        if self.body_sent and self.replay is not None:
            self.pending = list(self.replay)
            self.pending_size = self.replay_size
        self.body_sent = 0

    def request_sent(self) -> None:
        """The whole request is with the server: its response timeout starts (on the server
        connection, whose deadline timer outlives the exchange; a retry's new connection
        starts its own)."""
        pool, conn = self.pool, self.upstream
        assert pool is not None and conn is not None
        self.sent_at = time.monotonic()
        conn.arm(pool.config.http.response_timeout)

    def response_timeout(self) -> None:
        """Called by the server connection when no response head came in time."""
        if self.finished:
            return
        if self.upstream is not None:
            conn, self.upstream = self.upstream, None
            conn.exchange = None
            conn.abort()
        if self.head_sent:
            self.conn.abort()
            self.finish()
        else:
            self.attempt_failed("response", "response_timeout")

    def breaker_result(self, transition: Any) -> None:
        """Show a breaker's change on the server (state in stats, view, metrics) and log it."""
        server = self.server
        if transition is None or server is None:
            return
        server.circuit = str(getattr(transition.new, "value", transition.new))
        log.warning(
            "server %s/%s circuit %s (%s)",
            server.pool,
            server.name,
            server.circuit.replace("_", "-"),
            getattr(transition, "reason", ""),
        )

    # -- request body from the client --------------------------------------------------------

    def body_chunk(self, data: bytes) -> None:
        if self.body_limit is not None:
            self.body_limit.add(len(data))  # raises 413 (RemoteProtocolError)
        replay = self.replay
        if replay is not None:
            if self.replay_size + len(data) <= _BODY_BUFFER:
                replay.append(data)
                self.replay_size += len(data)
            else:
                self.replay = None  # too big to send again: no retry after this point
        if self.upstream is not None:
            self.write_body(data)
        else:
            self.pending.append(data)
            self.pending_size += len(data)
            if self.waf is not None and self.waf.holding:
                self.waf.chunk(self)  # the WAF inspects the body up to its limit
            if self.pending_size > _BODY_BUFFER:
                self.conn.pause_reading()

    def write_body(self, data: bytes) -> None:
        conn = self.upstream
        assert conn is not None
        conn.send_body(data, self.body_kind == "chunked")
        self.body_sent += len(data)

    def body_trailers(self, fields: Headers) -> None:
        """The client's trailer section, just before `body_complete`."""
        self.request_trailers = forwardable_trailers(fields) or None

    def body_complete(self) -> None:
        if self.body_done:
            return  # a request without a body: nothing was waiting for its end
        self.body_done = True
        if self.waf is not None and self.waf.holding:
            self.waf.release(self)  # the WAF inspects the body, then forwards it
            return
        if self.upstream is not None and not self.upgrade:
            self.upstream.end_body(self.body_kind == "chunked")
            self.request_sent()

    # -- response from the server ------------------------------------------------------------

    def on_response_head(self, response: Response, hop: list[tuple[bytes, bytes]]) -> None:
        """The server's response head: `response` with its end-to-end fields (Content-Length
        among them), `hop` its hop-by-hop fields, kept apart by the server adapter."""
        status = response.status
        if self.upstream is not None:
            self.upstream.disarm()
        loop = self.engine.registry.loop
        if self.response_time < 0 and self.sent_at:
            self.response_time = time.monotonic() - self.sent_at
        if 100 <= status < 200 and status != 101:
            self.interim = True
            self.conn.send_interim(self, response)
            return
        if status == 101 and not (
            self.upgrade and accepted_upgrade(self.request.headers, hop, self.engine.upgrades)
        ):
            # Never a tunnel for a request l4lb did not let upgrade (l7.upgrade).
            self.on_upstream_error("101 Switching Protocols not to an allowed upgrade")
            return
        self.interim = False
        pool, attempt = self.pool, self.attempt
        assert pool is not None and attempt is not None
        retry_on = pool.config.http.retry_on
        if status in retry_on and not self.head_sent and self.retry_on_status(status, retry_on):
            return
        self.status = status
        if attempt.verdict_due:
            self.breaker_result(attempt.verdict(status < 500, loop.time()))
        cache = self.cache
        if cache is not None:  # stage: cache store, revalidation, stale-if-error (l7/cache/)
            self.status = status = cache.on_head(self, response)
        self.response_headers(response, hop)
        request = self.request
        upgrade = status == 101
        route = self.route
        compress = route.compress if route is not None else None
        if compress is None:
            compress = self.engine.compress
        if compress is not None and not upgrade:  # stage: compression (l7/compress.py)
            self.encoder = start_encoder(compress, request, response)
        if request.method == "HEAD" or status in _NO_BODY_STATUSES or upgrade:
            self.framing = "none"
            if request.method == "HEAD" and self.upstream is not None and not upgrade:
                self.upstream.skip_body()
        if self.conn.draining or self.engine.draining:
            self.close_after = True
        self.head_sent = True
        self.conn.send_head(self, response)
        if request.method == "HEAD" and not upgrade:
            self.engine.registry.loop.call_soon(self.on_response_complete)

    def retry_on_status(self, status: int, retry_on: tuple[int, ...]) -> bool:
        """A status the pool retries (`retry_on`): True if the request went to another server
        (the answer is dropped with its connection, and the try counts as failed)."""
        attempt = self.attempt
        assert attempt is not None
        replayable = self.body_sent == 0 or self.replay is not None
        allowed = is_retryable(self.request.method, "status", status, retry_on, replayable)
        if not attempt.retry(allowed, True):
            return False  # the answer goes to the client as it is
        conn, self.upstream = self.upstream, None
        if conn is not None:
            conn.exchange = None
            conn.abort()
        self.breaker_result(attempt.fail(self.engine.registry.loop.time(), "status")[0])
        self.replay_body()
        self.forward()
        return True

    def started_wall(self) -> float:
        """When the request came, on the wall clock (Date and Age are wall-clock)."""
        return time.time() - (time.monotonic() - self.started)

    # -- stage: response headers -------------------------------------------------------------

    def response_headers(self, response: Response, hop: list[tuple[bytes, bytes]]) -> None:
        """Hop-by-hop removal (a Connection may name end-to-end fields that must go too), the
        route's header operations, X-Request-ID and the listener's security headers. The
        usual response (no such Connection, a route that leaves headers alone) keeps its
        fields as the server adapter read them."""
        upgrade = response.status == 101
        route = self.route
        fast = not upgrade and (route is None or not route.response_headers)
        if fast:
            for name, value in hop:
                if name == b"connection" and value.lower() != b"keep-alive":
                    fast = False
                    break
        if not fast:  # a 101, a route that edits response headers, or a Connection's names
            headers = list(response.fields())
            headers.extend(hop)
            out = response_hop_by_hop_filter(headers, upgrade=upgrade)
            if route is not None:
                out = apply_response_headers(route, out)
            response.set_fields(out)
        extra = [(b"x-request-id", self.request_id.encode())]
        extra.extend(self.engine.extra_response_headers)
        response.extra = extra

    def on_response_body(self, data: bytes) -> None:
        if self.cache is not None and not self.cache.on_body(data):
            return  # stored, not sent: the client gets a 304 or a stored body (l7/cache/)
        if self.interim or self.framing == "none" or not data:
            return  # (an empty chunk would end a chunked body early)
        if self.encoder is not None:
            data = self.encoder.compress(data)
            if not data:
                return
        self.bytes_out += len(data)
        self.conn.send_data(self, data)

    def on_response_trailers(self, fields: Headers) -> None:
        """The server's trailer section, just before `on_response_complete`."""
        if not self.interim:
            self.response_trailers = forwardable_trailers(fields) or None

    def on_response_complete(self) -> None:
        if self.interim:
            # The final response follows on the same parser (llhttp starts the next message
            # by itself, possibly in the same read), within a new response timeout.
            self.interim = False
            if self.upstream is not None and self.sent_at and self.pool is not None:
                self.upstream.arm(self.pool.config.http.response_timeout)
            return
        if self.finished or not self.head_sent or self.status == 101:
            return  # (a 101 goes on as a tunnel: see on_response_upgrade)
        if self.cache is not None:
            self.cache.on_complete(self)
        if self.encoder is not None and self.framing != "none":
            tail = self.encoder.finish()
            if tail:
                self.bytes_out += len(tail)
                self.conn.send_data(self, tail)
        self.conn.send_end(self)
        conn, self.upstream = self.upstream, None
        if conn is not None:
            if not self.body_done:
                conn.reusable = False  # the server answered before reading the whole body
                self.close_after = True
            conn.release()
        self.finish()

    def on_upstream_error(self, reason: str) -> None:
        if self.finished:
            return
        conn, self.upstream = self.upstream, None
        if conn is not None:
            conn.exchange = None
            conn.abort()
        if self.head_sent:
            if self.framing == "close":
                self.finish()  # a close-delimited body ends with the connection
                return
            self.close_after = True
            self.conn.abort()  # the client must not take a cut body for a whole one
            self.finish()
        else:
            self.attempt_failed("reset", reason)

    # -- WebSocket and other upgrades --------------------------------------------------------

    def on_response_upgrade(self, rest: bytes) -> None:
        """The server switched protocols: from here on, bytes flow untouched both ways."""
        if self.status != 101:
            self.conn.abort()
            self.finish()
            return
        if rest:
            self.conn.write(rest)
        self.conn.tunnel(self.upstream, self.upgrade_rest)
        self.upgrade_rest = b""

    def on_tunnel_data(self, data: bytes) -> None:
        self.bytes_out += len(data)
        self.conn.touched = True
        self.conn.write(data)

    def on_tunnel_eof(self, side: str) -> bool:
        """The server ended its way of the tunnel: "server" (EOF: passed on, see
        `H1Server.tunnel_eof`), "server_lost" (its connection closed: TLS, which cannot
        half-close) or "server_reset"."""
        if side == "server":
            self.conn.tunnel_eof("server")
            return True
        if side == "server_lost":
            self.conn.end_tunnel()
            return False
        self.conn.abort()
        self.finish()
        return False

    def tunnel_closed(self) -> None:
        """The client connection ends the tunnel (both ways have ended): log it now."""
        conn, self.upstream = self.upstream, None
        if conn is not None:
            conn.exchange = None
        self.finish()

    # -- flow control ------------------------------------------------------------------------

    def pause_client_reading(self) -> None:
        self.conn.pause_reading()

    def resume_client_reading(self) -> None:
        self.conn.resume_reading()

    # -- answers made here -------------------------------------------------------------------

    def respond(self, status: int, body: bytes, extra: list | None = None) -> None:
        headers = list(extra or [])
        headers.append((b"content-length", str(len(body)).encode()))
        headers.append((b"x-request-id", self.request_id.encode()))
        headers.extend(self.engine.extra_response_headers)
        if self.route is not None:
            headers = apply_response_headers(self.route, headers)
        self.simple(status, headers, body)

    def error(self, status: int, message: str, *, retry_after: int | None = None) -> None:
        if self.cache is not None and not self.head_sent and self.cache.on_error(self):
            return  # stale-if-error (l7/cache/)
        if self.head_sent:
            self.conn.abort()
            self.finish()
            return
        response, body = error_response(status, self.request_id, message, retry_after=retry_after)
        self.simple(status, response.fields(), body)

    def simple(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """Answer with a response made here; HEAD gets the head only (its Content-Length
        still describes the body a GET would get, RFC 9110 §9.3.2)."""
        if not self.body_done:
            self.close_after = True  # the request body was not read
        self.status = status
        self.head_sent = True
        self.bytes_out = len(body)
        if self.request.method == "HEAD":
            body = b""
        self.conn.send_simple(self, status, headers, body)
        self.finish()

    # -- the end -----------------------------------------------------------------------------

    def finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        if self.cache is not None:
            self.cache.ended(self)
        attempt = self.attempt
        if attempt is not None:
            # (the clock only matters to a trial that got no verdict: see Attempt.end)
            attempt.end(self.engine.registry.loop.time() if attempt.trial else 0.0)
        self.log()
        self.conn.exchange_done(self)

    def abort(self) -> None:
        """The client went away: drop the server side too."""
        if self.finished:
            return
        conn, self.upstream = self.upstream, None
        if conn is not None:
            conn.exchange = None
            conn.abort()
        if not self.status:
            self.status = 499  # nginx's "client closed request"
        self.finished = True
        if self.cache is not None:
            self.cache.ended(self)
        attempt = self.attempt
        if attempt is not None:
            attempt.end(self.engine.registry.loop.time())  # a trial with no verdict: abandoned
        self.log()

    def log(self) -> None:
        request = self.request
        listener = self.engine.listener
        if listener is not None:
            listener.requests += 1
        if not self.engine.access_log.enabled:
            return
        self.engine.access_log.write_http(
            client=request.client,
            listener=self.engine.config.name,
            method=request.method,
            host=request.host,
            path=request.target,
            status=self.status,
            bytes_out=self.bytes_out,
            route=self.route.name if self.route else "-",
            server=f"{self.pool.name}/{self.server.name}" if self.pool and self.server else "-",
            connect=self.connect_time,
            response=self.response_time,
            total=time.monotonic() - self.started,
            request_id=self.request_id,
            retries=self.attempt.retries if self.attempt is not None else 0,
            version=request.version,
            waf=self.waf.ids if self.waf is not None else "",
        )
