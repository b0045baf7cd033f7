"""Stage: upstream. Pick a server, send the request on a pooled or new connection, and when
a server fails before answering, retry elsewhere (l7.budget's rules, the pool's retry budget
and the server's breaker, held by `l4lb.attempt.Attempt`) or answer 502/504.

Plain functions of the `Exchange` (l7/exchange.py), which holds the state; kept apart
because the rules of trying servers change for other reasons than the request's path
through the pipeline. They run on every request, so they are compiled with it (setup.py
HOT_PATH) and add no calls: the exchange calls them where it called its own methods.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Final

from l7.answers import error
from l7.budget import is_retryable
from l7.finish import finish

if TYPE_CHECKING:
    from l7.exchange import Exchange
    from l7.upstream import UpstreamConn as ServerStream

__all__ = [
    "attach",
    "attempt_failed",
    "breaker_result",
    "forward",
    "on_upstream_error",
    "replay_body",
    "request_sent",
    "response_timeout",
    "retry_on_status",
]

_monotonic: Final = time.monotonic  # (a static in the compiled build, no lookup)

log: Final = logging.getLogger("l4lb")


def forward(ex: Exchange) -> None:
    pool, engine, attempt = ex.pool, ex.engine, ex.attempt
    assert pool is not None and attempt is not None
    now = engine.registry.loop.time()
    key = ex.request.client[0].encode()
    while True:
        server = pool.pick(now, key, attempt.tried)
        if server is None:
            error(ex, 503, "no server available", retry_after=1)
            return
        link = engine.link(pool, server)
        if attempt.begin(server, link.breaker, now):
            break  # (a server whose breaker says no counts as tried)
    ex.server = server
    ex.link = link
    up = link.upstream
    conn = up.take()
    if conn is not None:
        attach(ex, conn)
    else:
        ex.connect_started = _monotonic()
        up.connect(ex.connected)


def attach(ex: Exchange, conn: ServerStream, connected: bool = False) -> None:
    """Send the request on `conn`: a pooled connection, or (`connected`) a new one, whose
    connect time goes to the stats. A pooled one did not connect: it records 0 in the
    access log and nothing in the connect-latency histogram."""
    assert ex.server is not None and ex.pool is not None and ex.attempt is not None
    ex.attempt.connected()
    if connected:
        ex.connect_time = _monotonic() - ex.connect_started
        stats = ex.engine.stats
        if stats is not None:
            stats.connect_latency(ex.pool.name, ex.server.name).observe(ex.connect_time)
    else:
        ex.connect_time = 0.0
    ex.upstream = conn
    conn.start(ex)
    conn.send_request(ex)
    if ex.pending:
        pending, ex.pending, ex.pending_size = ex.pending, [], 0
        for chunk in pending:
            ex.write_body(chunk)
    ex.conn.resume_reading()
    if ex.body_done:
        if ex.body_kind != "none":
            conn.end_body(ex.body_kind == "chunked")
        request_sent(ex)


def attempt_failed(ex: Exchange, phase: str, reason: str) -> None:
    """A server failed before answering: retry elsewhere when allowed, else 502/504."""
    server, attempt = ex.server, ex.attempt
    assert server is not None and attempt is not None
    ex.upstream = None
    breaker_result(ex, attempt.fail(ex.engine.registry.loop.time(), phase)[0])
    replayable = ex.body_sent == 0 or ex.replay is not None
    allowed = is_retryable(ex.request.method, phase, None, (), replayable)  # type: ignore[arg-type]
    if attempt.retry(allowed, phase != "connect"):
        replay_body(ex)
        forward(ex)
        return
    status = 504 if reason in ("connect_timeout", "response_timeout") else 502
    error(ex, status, f"server {server.name}: {reason}")


def replay_body(ex: Exchange) -> None:
    """Queue what the client sent so far for the next server."""
    if ex.body_sent and ex.replay is not None:
        ex.pending = list(ex.replay)
        ex.pending_size = ex.replay_size
    ex.body_sent = 0


def request_sent(ex: Exchange) -> None:
    """The whole request is with the server: its response timeout starts (on the server
    connection, whose deadline timer outlives the exchange; a retry's new connection
    starts its own)."""
    pool, conn = ex.pool, ex.upstream
    assert pool is not None and conn is not None
    ex.sent_at = _monotonic()
    conn.arm(pool.config.http.response_timeout)


def response_timeout(ex: Exchange) -> None:
    """Called by the server connection when no response head came in time."""
    if ex.finished:
        return
    if ex.upstream is not None:
        conn, ex.upstream = ex.upstream, None
        conn.exchange = None
        conn.abort()
    if ex.head_sent:
        ex.conn.abort()
        finish(ex)
    else:
        attempt_failed(ex, "response", "response_timeout")


def breaker_result(ex: Exchange, transition: Any) -> None:
    """Show a breaker's change on the server (state in stats, view, metrics) and log it."""
    server = ex.server
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


def retry_on_status(ex: Exchange, status: int, retry_on: tuple[int, ...]) -> bool:
    """A status the pool retries (`retry_on`): True if the request went to another server
    (the answer is dropped with its connection, and the try counts as failed)."""
    attempt = ex.attempt
    assert attempt is not None
    replayable = ex.body_sent == 0 or ex.replay is not None
    allowed = is_retryable(ex.request.method, "status", status, retry_on, replayable)
    if not attempt.retry(allowed, True):
        return False  # the answer goes to the client as it is
    conn, ex.upstream = ex.upstream, None
    if conn is not None:
        conn.exchange = None
        conn.abort()
    breaker_result(ex, attempt.fail(ex.engine.registry.loop.time(), "status")[0])
    replay_body(ex)
    forward(ex)
    return True


def on_upstream_error(ex: Exchange, reason: str) -> None:
    if ex.finished:
        return
    conn, ex.upstream = ex.upstream, None
    if conn is not None:
        conn.exchange = None
        conn.abort()
    if ex.head_sent:
        if ex.framing == "close":
            finish(ex)  # a close-delimited body ends with the connection
            return
        ex.close_after = True
        ex.conn.abort()  # the client must not take a cut body for a whole one
        finish(ex)
    else:
        attempt_failed(ex, "reset", reason)
