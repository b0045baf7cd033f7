"""The HTTP/1.1 client adapter's refusals: a request that cannot be parsed or accepted
(400, 408, 413, 431, 500...) is answered with `Connection: close`, logged in the access
log with what is known of it, and the connection closed.

A plain function of the `H1Server` (l7/h1.py), kept apart from the parsing it answers for.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

from l7.errors_page import error_response
from l7.forwarded import new_request_id
from l7.h1wire import simple_response

if TYPE_CHECKING:
    from l7.h1 import H1Server

__all__ = [
    "fail",
]

log: Final = logging.getLogger("l4lb")


def fail(conn: H1Server, status: int, message: str) -> None:
    """A request we cannot parse or accept: answer (if no response is under way) and close."""
    log.info("http %s:%d: %d %s", conn.client[0], conn.client[1], status, message)
    conn.closing = True
    if conn.exchanges and conn.exchanges[0].head_sent:
        conn.abort()
        return
    for ex in conn.exchanges:
        ex.abort()
    conn.exchanges.clear()
    request_id = new_request_id()
    response, body = error_response(status, request_id, message, close=True)
    conn.write(simple_response(status, response.fields(), body, b""))
    engine = conn.engine_of()
    engine.access_log.write_http(
        client=conn.client,
        listener=engine.config.name,
        method="-",
        host="-",
        path=conn.url.decode("latin-1")[:200] or "-",
        status=status,
        bytes_out=len(body),
        route="-",
        server="-",
        connect=-1,
        response=-1,
        total=0.0,
        request_id=request_id,
        retries=0,
    )
    conn.close()
