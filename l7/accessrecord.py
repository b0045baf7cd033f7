"""The end of an exchange in the stats and the access log: the listener's request count,
and one access-log record (l4lb.accesslog) with the route, server, timings, retries,
protocol version and WAF rule ids.

A plain function of the `Exchange`, called from its `finish` and `abort`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from l7.exchange import Exchange

__all__ = ["log_exchange"]


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
        total=time.monotonic() - ex.started,
        request_id=ex.request_id,
        retries=ex.attempt.retries if ex.attempt is not None else 0,
        version=request.version,
        waf=ex.waf.ids if ex.waf is not None else "",
    )
