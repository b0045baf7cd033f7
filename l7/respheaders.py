"""Stage: response headers. Hop-by-hop removal, the route's header operations,
X-Request-ID and the listener's security headers, on the server's response head.

A plain function of the `Exchange`, called on every forwarded response (and by the cache
stage through `Exchange.response_headers` for a stored one); the usual response leaves this
stage with its fields as the server adapter read them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from l7.forwarded import response_hop_by_hop_filter
from l7.router import apply_response_headers

if TYPE_CHECKING:
    from l7.exchange import Exchange
    from l7.model import Response

__all__ = ["response_headers"]


def response_headers(ex: Exchange, response: Response, hop: list[tuple[bytes, bytes]]) -> None:
    """Hop-by-hop removal (a Connection may name end-to-end fields that must go too), the
    route's header operations, X-Request-ID and the listener's security headers. The
    usual response (no such Connection, a route that leaves headers alone) keeps its
    fields as the server adapter read them."""
    upgrade = response.status == 101
    route = ex.route
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
    extra = [(b"x-request-id", ex.request_id.encode())]
    extra.extend(ex.engine.extra_response_headers)
    response.extra = extra
