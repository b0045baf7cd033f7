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

import time
from typing import TYPE_CHECKING, Any, Final

from l4lb.attempt import Attempt
from l7.answers import error, respond, simple
from l7.cache.stage import CacheState, cache_begin
from l7.compress import Encoder, start_encoder
from l7.finish import abort, finish
from l7.forwarding import (
    attach,
    attempt_failed,
    breaker_result,
    forward,
    on_upstream_error,
    request_sent,
    response_timeout,
    retry_on_status,
)
from l7.model import Headers, Request, Response
from l7.respheaders import response_headers
from l7.router import render_redirect
from l7.routes import Forward, Redirect, Respond
from l7.trailers import forwardable_trailers
from l7.tunnel import on_response_upgrade, on_tunnel_eof, tunnel_closed
from l7.upgrade import accepted_upgrade
from l7.validate import BodyLimit
from l7.waf.stage import waf_start

if TYPE_CHECKING:
    from l4lb.pool import Pool
    from l4lb.server import Server
    from l7.engine import HttpEngine, ServerLink
    from l7.routes import HttpRoute
    from l7.sides import ClientStream
    from l7.upstream import UpstreamConn as ServerStream  # the one kind: native calls (setup.py)

__all__ = ["Exchange"]

_monotonic: Final = time.monotonic  # (a static in the compiled build, no lookup)

_BODY_BUFFER: Final = 256 * 1024  # request body held while the server connection is being made
_NO_BODY_STATUSES: Final = frozenset({204, 304})


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
        self.started = _monotonic()
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
            respond(self, 301, b"", extra=[(b"location", location.encode("latin-1"))])
            return
        match = engine.router.match(request)
        if match is None:
            if engine.config.pool is None:
                error(self, 404, "no route matched")
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
                respond(
                    self,
                    action.status,
                    action.body,
                    extra=[(b"content-type", action.content_type.encode())],
                )
                return
            if isinstance(action, Redirect):
                status, location = render_redirect(route, request)
                respond(self, status, b"", extra=[(b"location", location.encode("latin-1"))])
                return
            assert isinstance(action, Forward)
            pool_name = action.pool
            if route.cache and cache_begin(self, route.cache):
                return  # stage: cache lookup (answered, or waiting on another's fetch)
        self.pool = pool = engine.pools[pool_name]
        self.attempt = Attempt(pool.config.retries, engine.budget(pool))
        if self.waf is None or not self.waf.holding:
            forward(self)  # (else the WAF forwards once it has inspected the body)

    # -- stage: upstream ---------------------------------------------------------------------

    def forward(self) -> None:
        """Stage: upstream (l7/forwarding.py); for the stages that hold a request first."""
        forward(self)

    def connected(self, conn: ServerStream | None, reason: str) -> None:
        if self.finished:
            if conn is not None:
                conn.abort()
            return
        if conn is None:
            attempt_failed(self, "connect", reason)
            return
        attach(self, conn, connected=True)

    # DEL#

    # DEL#

    def response_timeout(self) -> None:
        """Called by the server connection when no response head came in time."""
        response_timeout(self)

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
            request_sent(self)

    # -- response from the server ------------------------------------------------------------

    def on_response_head(self, response: Response, hop: list[tuple[bytes, bytes]]) -> None:
        """The server's response head: `response` with its end-to-end fields (Content-Length
        among them), `hop` its hop-by-hop fields, kept apart by the server adapter."""
        status = response.status
        if self.upstream is not None:
            self.upstream.disarm()
        loop = self.engine.registry.loop
        if self.response_time < 0 and self.sent_at:
            self.response_time = _monotonic() - self.sent_at
        if 100 <= status < 200 and status != 101:
            self.interim = True
            self.conn.send_interim(self, response)
            return
        if status == 101 and not (
            self.upgrade and accepted_upgrade(self.request.headers, hop, self.engine.upgrades)
        ):
            # Never a tunnel for a request l4lb did not let upgrade (l7.upgrade).
            on_upstream_error(self, "101 Switching Protocols not to an allowed upgrade")
            return
        self.interim = False
        pool, attempt = self.pool, self.attempt
        assert pool is not None and attempt is not None
        retry_on = pool.config.http.retry_on
        if status in retry_on and not self.head_sent and retry_on_status(self, status, retry_on):
            return
        self.status = status
        if attempt.verdict_due:
            breaker_result(self, attempt.verdict(status < 500, loop.time()))
        cache = self.cache
        if cache is not None:  # stage: cache store, revalidation, stale-if-error (l7/cache/)
            self.status = status = cache.on_head(self, response)
        response_headers(self, response, hop)
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

    def started_wall(self) -> float:
        """When the request came, on the wall clock (Date and Age are wall-clock)."""
        return time.time() - (_monotonic() - self.started)

    # -- stage: response headers -------------------------------------------------------------

    def response_headers(self, response: Response, hop: list[tuple[bytes, bytes]]) -> None:
        response_headers(self, response, hop)

    def on_response_body(self, data: bytes) -> None:
        if self.cache is not None and not self.cache.on_body(data):
            return  # stored, not sent: the client gets a 304 or a stored body (l7/cache/)
        if self.interim or self.framing == "none" or not data:
            return  # (an empty chunk would end a chunked body early)
        self.send_body(data)

    def send_body(self, data: bytes) -> None:
        """Body bytes to the client, through the encoder when there is one (also the cache's)."""
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
        finish(self)

    def on_upstream_error(self, reason: str) -> None:
        on_upstream_error(self, reason)

    # -- WebSocket and other upgrades --------------------------------------------------------

    def on_response_upgrade(self, rest: bytes) -> None:
        on_response_upgrade(self, rest)

    def on_tunnel_data(self, data: bytes) -> None:
        self.bytes_out += len(data)
        self.conn.touched = True
        self.conn.write(data)

    def on_tunnel_eof(self, side: str) -> bool:
        return on_tunnel_eof(self, side)

    def tunnel_closed(self) -> None:
        tunnel_closed(self)

    # -- flow control ------------------------------------------------------------------------

    def pause_client_reading(self) -> None:
        self.conn.pause_reading()

    def resume_client_reading(self) -> None:
        self.conn.resume_reading()

    # -- answers made here -------------------------------------------------------------------

    def respond(self, status: int, body: bytes, extra: list | None = None) -> None:
        respond(self, status, body, extra)

    def error(self, status: int, message: str, *, retry_after: int | None = None) -> None:
        error(self, status, message, retry_after=retry_after)

    def simple(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        simple(self, status, headers, body)

    # -- the end -----------------------------------------------------------------------------

    def finish(self) -> None:
        finish(self)  # (l7/finish.py)

    def abort(self) -> None:
        """The client went away: drop the server side too."""
        abort(self)
