"""The end of an exchange: what its tries hold given back (l4lb.attempt), the cache stage's
part ended, the listener's request count, and one access-log record (l4lb.accesslog) with
the route, server, timings, retries, protocol version and WAF rule ids.

Plain functions of the `Exchange` (its `finish` and `abort` hand over here; the pipeline's
own modules call them directly, so the usual request makes no more calls than before).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from l7.exchange import Exchange

__all__ = ["abort", "finish", "log_exchange"]

_monotonic: Final = time.monotonic  # (a static in the compiled build, no lookup)


def log_exchange(ex: Exchange) -> None:
    request = ex.request
    listener = ex.engine.listener
    if listener is not None:
        listener.requests += 1
    if not ex.engine.access_log.enabled:
        return
    ex.engine.access_log.write_http(
        client=request.client,
        listener=ex.engine.config.name,
        method=request.method,
        host=request.host,
        path=request.target,
        status=ex.status,
        bytes_out=ex.bytes_out,
        route=ex.route.name if ex.route else "-",
        server=f"{ex.pool.name}/{ex.server.name}" if ex.pool and ex.server else "-",
        connect=ex.connect_time,
        response=ex.response_time,
        total=_monotonic() - ex.started,
        request_id=ex.request_id,
        retries=ex.attempt.retries if ex.attempt is not None else 0,
        version=request.version,
        waf=ex.waf.ids if ex.waf is not None else "",
    )


def finish(ex: Exchange) -> None:
    """The exchange is over (answered, or failed after its head went out): give back what
    its tries hold, end the cache stage's part, write the record, and tell the client side."""
    if ex.finished:
        return
    ex.finished = True
    if ex.cache is not None:
        ex.cache.ended(ex)
    attempt = ex.attempt
    if attempt is not None:
        # (the clock only matters to a trial that got no verdict: see Attempt.end)
        attempt.end(ex.engine.registry.loop.time() if attempt.trial else 0.0)
    log_exchange(ex)
    ex.conn.exchange_done(ex)


def abort(ex: Exchange) -> None:
    """The client went away: drop the server side too."""
    if ex.finished:
        return
    conn, ex.upstream = ex.upstream, None
    if conn is not None:
        conn.exchange = None
        conn.abort()
    if not ex.status:
        ex.status = 499  # nginx's "client closed request"
    ex.finished = True
    if ex.cache is not None:
        ex.cache.ended(ex)
    attempt = ex.attempt
    if attempt is not None:
        attempt.end(ex.engine.registry.loop.time())  # a trial with no verdict: abandoned
    log_exchange(ex)
