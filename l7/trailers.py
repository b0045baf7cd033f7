"""Which trailer fields l4lb passes on, whatever the HTTP versions on either side.

Trailers (RFC 9110 §6.5) follow a body: gRPC's status, checksums, timing. They pass both
ways, from client to server and from server to client, as Envoy and HAProxy pass them, but
only fields that are allowed in a trailer section: RFC 9110 §6.5.1 forbids those that frame
the message, route it, modify or authenticate the request, or say how to process the
content, so a client cannot slip, say, a Host or an Authorization past the header policy
stage by sending it after the body. Hop-by-hop fields never pass (they are the connection's).
Pseudo-fields (`:status`) have no place in a trailer section either.

Where the next hop cannot carry trailers, they are dropped: an HTTP/1.1 message with a
Content-Length (trailers need chunked framing) or a close-delimited HTTP/1.0 response.
"""

from __future__ import annotations

from l7.forwarded import HOP_BY_HOP
from l7.model import Headers

__all__ = ["forwardable_trailers"]

# RFC 9110 §6.5.1: framing, routing, request modifiers, authentication, response control
# data and content processing.
_FORBIDDEN = HOP_BY_HOP | {
    b"age",
    b"authorization",
    b"cache-control",
    b"content-encoding",
    b"content-length",
    b"content-range",
    b"content-type",
    b"cookie",
    b"date",
    b"expect",
    b"expires",
    b"host",
    b"if-match",
    b"if-modified-since",
    b"if-none-match",
    b"if-range",
    b"if-unmodified-since",
    b"location",
    b"max-forwards",
    b"pragma",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"range",
    b"retry-after",
    b"set-cookie",
    b"trailer",
    b"transfer-encoding",
    b"vary",
    b"warning",
    b"www-authenticate",
}


def forwardable_trailers(fields: Headers) -> Headers:
    """The fields of a trailer section (names lower-case) that may be passed on."""
    return [(n, v) for n, v in fields if n not in _FORBIDDEN and not n.startswith(b":")]
