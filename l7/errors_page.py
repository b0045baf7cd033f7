"""The small responses l4lb writes itself when a request fails (400, 413, 502, 503, 504, ...).

Plain text, not HTML: nothing in it can be interpreted by a browser (and `nosniff` forbids
guessing otherwise), it reads well in curl and logs, and it carries the request ID so a user can
quote it and an operator can find the access-log line. nginx and HAProxy send small fixed HTML
pages; Envoy sends plain text bodies like this one.

The adapter writes the returned `Response` and body through its protocol library (h11, h2, ...).
For a HEAD request it must send the head only: Content-Length still describes the body a GET
would get (RFC 9110 §9.3.2).
"""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Final

from l4lb.errors import LocalProtocolError
from l7.model import Response

__all__ = ["error_response", "reason_phrase", "status_line"]

_SAFE_ID: Final = re.compile(r"[\x21-\x7e]{1,200}")


def reason_phrase(status: int) -> str:
    """The standard reason phrase for `status` (RFC 9110 §15), or "Error" for an unregistered
    code (the phrase is informational only, RFC 9112 §4)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


_STATUS_LINES: Final[dict[int, bytes]] = {}


def status_line(status: int) -> bytes:
    """`HTTP/1.1 200 OK\r\n` for `status`, made once per status code (every response
    needs one, and looking the phrase up through HTTPStatus costs more than the rest)."""
    line = _STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 %d %s\r\n" % (status, reason_phrase(status).encode("ascii"))
        if 100 <= status <= 999:
            _STATUS_LINES[status] = line
    return line


def error_response(
    status: int,
    request_id: str,
    message: str = "",
    *,
    close: bool = False,
    retry_after: int | None = None,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> tuple[Response, bytes]:
    """A complete error response: the head as a `Response` and its body.

    Body: `"<status> <reason>\\n[<message>\\n]request id: <id>\\n"`, UTF-8. Headers:
    Content-Type `text/plain; charset=utf-8`, Content-Length, X-Content-Type-Options
    `nosniff`, X-Request-ID, Cache-Control `no-store` (an error must not be cached for
    others), `Connection: close` when `close` (after a framing error the connection cannot be
    reused, RFC 9112 §9.6), `Retry-After` in seconds for 503/429 when given (RFC 9110 §10.2.3).

    Raises `LocalProtocolError` for a status outside 400-599 or a request ID with characters
    that cannot go in a header: either is a bug in the caller.
    """
    if not 400 <= status <= 599:
        raise LocalProtocolError(f"error_response needs a 4xx or 5xx status, not {status}")
    if not _SAFE_ID.fullmatch(request_id):
        raise LocalProtocolError(f"request id {request_id[:40]!r} cannot go in a header")
    phrase = reason_phrase(status)
    text = f"{status} {phrase}\n"
    if message:
        text += message.rstrip("\n") + "\n"
    text += f"request id: {request_id}\n"
    body = text.encode("utf-8")

    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode("ascii")),
        (b"x-content-type-options", b"nosniff"),
        (b"cache-control", b"no-store"),
        (b"x-request-id", request_id.encode("ascii")),
    ]
    if retry_after is not None:
        headers.append((b"retry-after", str(max(0, retry_after)).encode("ascii")))
    if extra_headers:
        headers.extend(extra_headers)
    if close:
        headers.append((b"connection", b"close"))
    return Response(status, headers, phrase.encode("ascii")), body
