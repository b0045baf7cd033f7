"""Absolute-form request-targets (`GET http://a.test/x HTTP/1.1`): one authority for all.

RFC 9112 §3.2.2: a server receiving an absolute-form target "MUST ignore the received Host
header field (if any) and instead use the host information of the request-target", and a
proxy forwarding it "MUST generate a new Host field value based on the received
request-target rather than forward the received Host field value". l4lb does both: the
target's authority is what the request is routed by, what X-Forwarded-Host and the forwarded
Host say, and the request goes upstream in origin-form (`GET /x`). Routing by Host while the
server acts on the target (as l4lb once did) let a request pick its route with one authority
and its server-side meaning with another. nginx uses the absolute URI's host the same way;
HAProxy normalizes absolute-form to origin-form (HTX). Refusing a target whose authority
differs from Host (400) was the other choice; it breaks clients that talk to l4lb as to a
forward proxy, and gains nothing once only one authority is used.

Refused with 400: a scheme other than http or https, an empty or invalid host (RFC 9110
§4.2.1: "MUST reject it as invalid"), userinfo (§4.2.4: a recipient "SHOULD ... treat its
presence as an error"), a fragment (not part of a request-target).
"""

from __future__ import annotations

from l4lb.errors import RemoteProtocolError
from l7.model import Headers
from l7.validate import valid_host

__all__ = ["origin_form", "with_host"]


def _bad(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(message, status_hint=400)


def origin_form(method: str, target: str) -> tuple[bytes, str]:
    """`(authority, origin-form target)` of an absolute-form `target` (already checked to
    start with `scheme://` and to hold no whitespace or control characters). The path is `/`
    when the URI has none, and `*` for `OPTIONS` with no path and no query (RFC 9112 §3.2.4).
    Raises `RemoteProtocolError` (400) for a target l4lb will not route (module docstring)."""
    scheme, sep, rest = target.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        raise _bad(f"absolute-form request-target with scheme {scheme[:20]!r}")
    if "#" in rest:
        raise _bad("fragment in the request-target")
    end = len(rest)
    for stop in "/?":
        found = rest.find(stop)
        if 0 <= found < end:
            end = found
    authority, tail = rest[:end], rest[end:]
    if "@" in authority:
        raise _bad("userinfo in the request-target")
    raw = authority.encode("latin-1")
    host = raw.rpartition(b":")[0] if raw.rfind(b":") > raw.rfind(b"]") else raw
    if not host or not valid_host(raw):
        raise _bad(f"invalid authority in the request-target {authority[:60]!r}")
    if not tail:
        tail = "*" if method == "OPTIONS" else "/"
    elif tail[0] == "?":
        tail = "/" + tail
    return raw, tail


def with_host(headers: Headers, authority: bytes) -> Headers:
    """`headers` with Host set to `authority`: in its place, or first when there was none
    (an HTTP/1.0 request may have none). `headers` have lower-case names."""
    if any(n == b"host" for n, _ in headers):
        return [(n, authority) if n == b"host" else (n, v) for n, v in headers]
    return [(b"host", authority), *headers]
