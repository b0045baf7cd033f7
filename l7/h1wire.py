"""HTTP/1.1 serialization, for the two HTTP/1.1 adapters only (l7/h1.py towards clients,
l7/upstream.py towards servers): request heads for servers, response heads for clients, chunk
framing. Nothing here decides policy; the pipeline has already chosen every field.

What a request costs is kept small here on purpose (docs/ARCHITECTURE.md): the usual request
(no hop-by-hop or forwarding fields of its own, a route that leaves headers alone) goes out as
its own fields plus forwarding lines made once per client connection and authority, with its
request line as received; anything else goes through `forward_headers`, which a hypothesis
test holds equal to the fast path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from l7.errors_page import status_line
from l7.forwarded import REWRITTEN, forward_headers, forwarding_lines, new_traceparent
from l7.router import apply_request_headers

if TYPE_CHECKING:
    from l7.exchange import Exchange
    from l7.model import Headers, Response

__all__ = [
    "LAST_CHUNK",
    "chunk",
    "last_chunk",
    "request_head",
    "response_head",
    "simple_response",
]

LAST_CHUNK: Final = b"0\r\n\r\n"


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (RFC 9112 §7.1)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def last_chunk(trailers: Headers | None) -> bytes:
    """The end of a chunked body, with its trailer section (RFC 9112 §7.1.2) if any."""
    if not trailers:
        return LAST_CHUNK
    return b"0\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in trailers) + b"\r\n"


def request_head(ex: Exchange) -> bytes:
    """The request head for the server, after the header-policy stage."""
    request, engine = ex.request, ex.engine
    settings = engine.settings
    if ex.target is request.target and ex.request_line is not None:
        line = ex.request_line  # as the client sent it: no decoding and encoding again
    else:
        line = f"{request.method} {ex.target} HTTP/1.1".encode("latin-1")
    route = ex.route
    lines = [line]
    usual = not ex.upgrade and (route is None or not route.request_headers)
    if usual:
        for name, value in request.headers:
            if name in REWRITTEN:
                # `Connection: keep-alive` only removes itself; anything else needs thought.
                if name == b"connection" and value.lower() == b"keep-alive":
                    continue
                usual = False
                del lines[1:]
                break
            lines.append(name + b": " + value)
    if usual:
        lines.append(_forwarding_lines(ex) + b"x-request-id: " + ex.request_id.encode())
        if settings.traceparent == "create":
            lines.append(b"traceparent: " + new_traceparent())
    else:
        headers = forward_headers(
            request.headers,
            request.client[0],
            engine.scheme,
            ex.authority.decode("latin-1"),
            ex.request_id,
            engine.trusted,
            "1.1 l4lb",
            settings.forwarded,
            settings.traceparent,  # type: ignore[arg-type]
            ex.upgrade,
            settings.x_forwarded_for,  # type: ignore[arg-type]
        )
        if route is not None:
            headers = apply_request_headers(route, headers)
        for name, value in headers:
            lines.append(name + b": " + value)
    if ex.body_kind == "chunked":
        lines.append(b"transfer-encoding: chunked")
    lines.append(b"\r\n")
    return b"\r\n".join(lines)


def _forwarding_lines(ex: Exchange) -> bytes:
    """`forwarding_lines` for this request, kept on the client connection: a client keeps
    its address, and nearly always its authority, for the life of a connection."""
    conn, engine = ex.conn, ex.engine
    cached = conn.forwarding
    if cached[0] is not engine or cached[1] != ex.authority:
        lines = forwarding_lines(
            ex.request.client[0],
            engine.scheme,
            ex.authority.decode("latin-1"),
            engine.trusted,
            engine.settings.forwarded,
        )
        cached = conn.forwarding = (engine, ex.authority, lines)
    return cached[2]


def response_head(response: Response, framing: bytes, connection: bytes) -> bytes:
    """A response head for the client: the status line, the fields (as read, when they came
    from an HTTP/1.1 server and no stage changed them), the fields stages added, `framing`
    (a Transfer-Encoding line or nothing) and `connection` (a Connection line or nothing).
    The response's `lines` are used up."""
    lines = response.lines
    if lines is None:
        lines = [name + b": " + value for name, value in response.headers or ()]
    if response.extra:
        for name, value in response.extra:
            lines.append(name + b": " + value)
    if framing:
        lines.append(framing)
    if connection:
        lines.append(connection)
    lines.append(b"\r\n")
    return status_line(response.status) + b"\r\n".join(lines)


def simple_response(status: int, fields: Headers, body: bytes, connection: bytes) -> bytes:
    """A whole response made by l4lb: head and body in one write."""
    lines = [status_line(status)]
    lines += [name + b": " + value + b"\r\n" for name, value in fields]
    if connection:
        lines.append(connection + b"\r\n")
    return b"".join(lines) + b"\r\n" + body
