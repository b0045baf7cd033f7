"""Answering a request from a stored entry: the head, the body (compressed on the way when
the route compresses and no stored copy fits), and the end of the exchange. Used by the cache
stage for hits and by a fill's waiters (l7/cache/flight.py), which is why it is neither.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from l7.cache.answer import answer, encoded_variant
from l7.cache.policy import not_modified
from l7.compress import start_encoder

if TYPE_CHECKING:
    from l7.cache.entry import Entry
    from l7.exchange import Exchange

__all__ = ["serve"]


def serve(ex: Exchange, entry: Entry, field: bytes, now: float) -> None:
    """Answer `ex` from `entry` now (a hit, a stale answer, a waiter served from the store)."""
    state = ex.cache
    request = ex.request
    client = state.client if state is not None else request.headers
    route = ex.route
    compress = route.compress if route is not None else None
    if compress is None:
        compress = ex.engine.compress
    variant = None
    if (
        entry.status == 200
        and compress is not None
        and compress.encodings
        and state
        and not not_modified(client, entry.headers)  # (answered 304, not a body)
    ):
        variant = encoded_variant(state.store, state.key, entry, compress, request)
    response, body = answer(entry, client, request.method, now, field, variant)
    ex.status = response.status
    ex.response_headers(response, [])
    if compress is not None and variant is None:
        ex.encoder = start_encoder(compress, request, response)
    if request.method == "HEAD" or response.status in (204, 304):
        ex.framing = "none"
    ex.head_sent = True
    conn = ex.conn
    conn.cork()  # (head and body in one write)
    conn.send_head(ex, response)
    if body and ex.framing != "none":
        ex.send_body(body)
    ex.on_response_complete()
    conn.uncork()
