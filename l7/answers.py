"""Answers the pipeline makes itself: a route's fixed `respond`, redirects, and errors
(404 no route, 502/503/504 from the upstream stage, a stage's 4xx), with the request id,
the listener's security headers and the route's header operations.

Plain functions of the `Exchange`, whose `respond`, `error` and `simple` (what the stages
call) hand over here. A HEAD gets the head only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from l7.errors_page import error_response
from l7.finish import finish
from l7.router import apply_response_headers

if TYPE_CHECKING:
    from l7.exchange import Exchange

__all__ = ["error", "respond", "simple"]


def respond(ex: Exchange, status: int, body: bytes, extra: list | None = None) -> None:
    headers = list(extra or [])
    headers.append((b"content-length", str(len(body)).encode()))
    headers.append((b"x-request-id", ex.request_id.encode()))
    headers.extend(ex.engine.extra_response_headers)
    if ex.route is not None:
        headers = apply_response_headers(ex.route, headers)
    simple(ex, status, headers, body)


def error(ex: Exchange, status: int, message: str, *, retry_after: int | None = None) -> None:
    if ex.cache is not None and not ex.head_sent and ex.cache.on_error(ex):
        return  # stale-if-error (l7/cache/)
    if ex.head_sent:
        ex.conn.abort()
        finish(ex)
        return
    response, body = error_response(status, ex.request_id, message, retry_after=retry_after)
    simple(ex, status, response.fields(), body)


def simple(ex: Exchange, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    """Answer with a response made here; HEAD gets the head only (its Content-Length
    still describes the body a GET would get, RFC 9110 §9.3.2)."""
    if not ex.body_done:
        ex.close_after = True  # the request body was not read
    ex.status = status
    ex.head_sent = True
    ex.bytes_out = len(body)
    if ex.request.method == "HEAD":
        body = b""
    ex.conn.send_simple(ex, status, headers, body)
    finish(ex)
