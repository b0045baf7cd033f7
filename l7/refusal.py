"""A stage's refusal of a request: the error page, the stage's own headers and the
listener's security headers. Its own module so that the stages that refuse (guard.py and
globallimit.py) share it without importing each other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from l7.errors_page import error_response

if TYPE_CHECKING:
    from l7.exchange import Exchange

__all__ = ["refuse"]


def refuse(
    exchange: Exchange,
    status: int,
    message: str,
    extra: list[tuple[bytes, bytes]],
    retry_after: int | None = None,
) -> None:
    """A stage's refusal (403 by access rules, 429 by a rate limit, 503 when the limit store
    is away): the error page with `extra` headers (RateLimit, Retry-After) and the listener's
    security headers."""
    response, body = error_response(
        status, exchange.request_id, message, retry_after=retry_after, extra_headers=extra
    )
    headers = response.fields()
    headers.extend(exchange.engine.extra_response_headers)
    exchange.simple(status, headers, body)
