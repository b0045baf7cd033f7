"""Header policy between client and server: hop-by-hop removal, forwarding headers, request IDs,
trace context, and the security headers added to responses.

Runs once per request and once per response, so it makes one pass over the header list and
builds a new list (the input is never changed); header names are lower-case `bytes` as in
`l7.model`.

**Hop-by-hop** (RFC 9110 §7.6.1): Connection, Keep-Alive, Proxy-Connection, TE, Trailer,
Transfer-Encoding, Upgrade and every field named in Connection are for one connection only and
are removed; the adapter frames the body again for the next hop (so Content-Length stays). A
client that names Host or Content-Length in Connection breaks §7.6.1 ("a sender MUST NOT send a
connection option corresponding to a field that is intended for all recipients"): those two are
kept, so a client cannot strip the fields the server routes and frames by. Nominating a field we
set ourselves (X-Forwarded-For, ...) only removes the client's copy, which we replace anyway.
With `upgrade=True` (a WebSocket handshake the pipeline allowed) Upgrade is kept and
`Connection: upgrade` sent, as nginx's `proxy_set_header Connection "upgrade"` does.

**X-Forwarded-For** is a list of hops the server reads from the right: by default
(`x_forwarded_for="append"`) the client's address is appended to whatever came in, as nginx's
`$proxy_add_x_forwarded_for`, HAProxy's `option forwardfor` and Envoy do; the last element is
always the address l4lb saw, and the application decides how many hops to believe. With
`"replace"`, a client outside `trusted` has its list replaced by its address.

**Trust** (`trusted`: networks of proxies in front of l4lb): if the client's address is in
one of them, its Forwarded chain is kept and ours is appended, and its X-Forwarded-Proto /
X-Forwarded-Host are kept when present; otherwise these are replaced with what l4lb saw
itself. This is nginx's `set_real_ip_from` with Envoy's `xff_num_trusted_hops` idea reduced
to one hop: anything but a trusted proxy can write anything into these headers, and unlike
X-Forwarded-For they carry one value a server takes as it is, so a server must only see
values l4lb vouches for. With `forwarded_header`
off, a client's Forwarded is removed even from a trusted proxy: a chain l4lb did not extend
would name the wrong last hop. IPv4-mapped IPv6 client
addresses (`::ffff:192.0.2.1`, from dual-stack sockets) are treated and written as IPv4.

**Via** (RFC 9110 §7.6.3) is always appended: it records the path, it does not vouch for it.

**X-Request-ID** is set to the request's ID (the caller picks a client's valid ID with
`request_id_from` or makes one with `new_request_id`). **traceparent** (W3C Trace Context,
level 1) is passed on when valid, dropped with its tracestate when not, and created (random
trace-id and parent-id, sampled flag 01) when absent and `traceparent="create"`.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import random
import re
from collections.abc import Iterable, Sequence
from typing import Final, Literal

from l7.model import Headers

__all__ = [
    "HOP_BY_HOP",
    "REWRITTEN",
    "forward_headers",
    "forwarding_lines",
    "new_request_id",
    "new_traceparent",
    "request_id_from",
    "response_hop_by_hop_filter",
    "security_headers",
    "valid_traceparent",
]

_getrandbits: Final = random.getrandbits

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Fields a Connection header may not remove (RFC 9110 §7.6.1, see the module docstring).
_NEVER_NOMINATED: Final = frozenset({b"host", b"content-length"})
# Fields forward_headers writes itself; the client's copies are dropped or merged.
_MANAGED: Final = frozenset(
    {
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"forwarded",
        b"via",
        b"x-request-id",
        b"traceparent",
        b"tracestate",
    }
)
# Every field forward_headers does not pass through as it is. A request without any of them
# goes out as its own fields followed by `forwarding_lines` and the request's own ID.
REWRITTEN = _SPECIAL = HOP_BY_HOP | _MANAGED
_VIA: Final = b"1.1 l4lb"

_REQUEST_ID: Final = re.compile(rb"[A-Za-z0-9._~+/=-]{1,200}")
# W3C Trace Context §3.2: version "00" is exactly 55 characters; a later version may append
# "-..." fields, which a version-00 reader ignores. Hex is lower-case only; version ff is invalid.
_TRACEPARENT: Final = re.compile(
    rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?"
)
_ZERO_TRACE: Final = b"0" * 32
_ZERO_SPAN: Final = b"0" * 16
# RFC 9110 §5.6.2 tchar: a Forwarded value made only of these needs no quotes (RFC 7239 §4).
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

_REFERRER_POLICIES: Final = frozenset(
    {
        "no-referrer",
        "no-referrer-when-downgrade",
        "origin",
        "origin-when-cross-origin",
        "same-origin",
        "strict-origin",
        "strict-origin-when-cross-origin",
        "unsafe-url",
    }
)


# -- request IDs and trace context ----------------------------------------------------------------


def request_id_from(headers: Headers) -> str | None:
    """The client's X-Request-ID if it is 1-200 characters of `[A-Za-z0-9._~+/=-]` (enough for
    UUIDs, base64 and most tracing IDs, nothing that could break a log line), else None."""
    for name, value in headers:
        if name == b"x-request-id":
            return value.decode("ascii") if _REQUEST_ID.fullmatch(value) else None
    return None


def new_request_id() -> str:
    """A fresh request ID: 128 random bits as 32 hex digits. From `random`, not `os.urandom`:
    an ID needs to be unique, not secret, and a `getrandom` system call per request cost 8%
    of the HTTP hot path (bench/RESULTS.md)."""
    return _getrandbits(128).to_bytes(16, "big").hex()  # (twice as fast as formatting)


def valid_traceparent(value: bytes) -> bool:
    """Is `value` a traceparent a version-00 reader accepts (W3C Trace Context §3.2.2)?"""
    match = _TRACEPARENT.fullmatch(value)
    if match is None:
        return False
    version, trace_id, parent_id, _flags, rest = match.groups()
    if version == b"ff" or trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return False
    return rest is None or version != b"00"


def new_traceparent() -> bytes:
    """A new version-00 traceparent with random IDs and the sampled flag set."""
    trace_id = os.urandom(16).hex()
    parent_id = os.urandom(8).hex()
    if trace_id == "0" * 32 or parent_id == "0" * 16:  # 2**-64 odds, but the spec forbids it
        return new_traceparent()
    return f"00-{trace_id}-{parent_id}-01".encode("ascii")


# -- hop-by-hop ----------------------------------------------------------------------------------


def _nominated(headers: Headers) -> frozenset[bytes] | None:
    """Field names listed in Connection headers (lower-case), minus the protected ones."""
    names: set[bytes] | None = None
    for name, value in headers:
        if name == b"connection":
            if names is None:
                names = set()
            for option in value.split(b","):
                option = option.strip(b" \t").lower()
                if option and option not in _NEVER_NOMINATED:
                    names.add(option)
    return frozenset(names) if names else None


def _strip_hop_by_hop(
    headers: Headers, upgrade: bool, skip: frozenset[bytes], nominated: frozenset[bytes] | None
) -> Headers:
    out: Headers = []
    for name, value in headers:
        if name in HOP_BY_HOP or name in skip or (nominated is not None and name in nominated):
            if upgrade and name == b"upgrade":
                out.append((name, value))
            continue
        out.append((name, value))
    if upgrade:
        out.append((b"connection", b"upgrade"))
    return out


def response_hop_by_hop_filter(headers: Headers, *, upgrade: bool = False) -> Headers:
    """A response's headers without its hop-by-hop fields (RFC 9110 §7.6.1); `upgrade=True`
    keeps Upgrade and sends `Connection: upgrade` for a 101 Switching Protocols."""
    return _strip_hop_by_hop(headers, upgrade, frozenset(), _nominated(headers))


# -- forwarding headers --------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _client_address(
    client_ip: str,
) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, str]:
    """The client's address and its text form, IPv4-mapped IPv6 unwrapped. Cached: parsing
    costs more than the rest of `forward_headers`, and clients send many requests."""
    address = ipaddress.ip_address(client_ip)
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address, str(address)


def _is_trusted(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, trusted: Sequence[IPNetwork]
) -> bool:
    version = address.version  # `in` across versions is False, but compare cheaply first
    return any(network.version == version and address in network for network in trusted)


def _forwarded_value(text: str) -> str:
    """A Forwarded parameter value: a token as is, anything else as a quoted-string."""
    if _TOKEN.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _forwarded_element(address: str, version: int, scheme: str, host: str) -> bytes:
    node = f'"[{address}]"' if version == 6 else address  # RFC 7239 §6: IPv6 is quoted
    element = f"for={node};proto={_forwarded_value(scheme)}"
    if host:
        element += f";host={_forwarded_value(host)}"
    return element.encode("latin-1", "replace")


def _joined(values: Iterable[bytes], ours: bytes) -> bytes:
    """A list field's values and our own, as one comma-separated line (RFC 9110 §5.3)."""
    return b", ".join([*values, ours])


def forward_headers(
    request_headers: Headers,
    client_ip: str,
    scheme: str,
    host: str,
    request_id: str,
    trusted: Sequence[IPNetwork] = (),
    via: str = "1.1 l4lb",
    forwarded_header: bool = False,
    traceparent: Literal["pass", "create"] = "pass",
    upgrade: bool = False,
    x_forwarded_for: Literal["append", "replace"] = "append",
) -> Headers:
    """The headers to send to the server for a request (see the module docstring for policy).

    `client_ip` is the address l4lb accepted the connection from (or the one a PROXY header
    gave); `scheme` and `host` are what the client asked l4lb for (`host` as in the Host header,
    port included). Own headers are appended after the client's, one line each, in the order
    Via, X-Forwarded-For, -Proto, -Host, Forwarded, X-Request-ID, traceparent.
    Raises ValueError if `client_ip` is not an IP address (a caller bug).
    """
    address, client = _client_address(client_ip)
    is_trusted = bool(trusted) and _is_trusted(address, trusted)

    # One pass splits the fields passed through from the few that need thought (usually
    # none, or a Connection: keep-alive), so the work below is over that short list only.
    if upgrade:
        special = request_headers
        nominated = _nominated(request_headers)
        out = _strip_hop_by_hop(request_headers, True, _MANAGED, nominated)
    else:
        out = []
        special = []
        for item in request_headers:
            (special if item[0] in _SPECIAL else out).append(item)
        nominated = _nominated(special) if special else None
        if nominated is not None:
            extra = nominated - _SPECIAL  # names only a Connection header makes hop-by-hop
            if extra:
                out = [item for item in out if item[0] not in extra]

    xff: list[bytes] = []
    fwd: list[bytes] = []
    via_in: list[bytes] = []
    proto_in = host_in = None
    trace: list[bytes] = []
    tracestate: list[tuple[bytes, bytes]] = []
    for name, value in special:
        if name in _MANAGED and (nominated is None or name not in nominated):
            if name == b"x-forwarded-for":
                xff.append(value)
            elif name == b"forwarded":
                fwd.append(value)
            elif name == b"via":
                via_in.append(value)
            elif name == b"x-forwarded-proto":
                proto_in = proto_in or value
            elif name == b"x-forwarded-host":
                host_in = host_in or value
            elif name == b"traceparent":
                trace.append(value)
            elif name == b"tracestate":
                tracestate.append((name, value))

    via_b = _VIA if via == "1.1 l4lb" else via.encode("latin-1")
    out.append((b"via", _joined(via_in, via_b) if via_in else via_b))
    ours = client.encode("ascii")
    keep_xff = xff and (is_trusted or x_forwarded_for == "append")
    out.append((b"x-forwarded-for", _joined(xff, ours) if keep_xff else ours))
    scheme_b = scheme.encode("latin-1")
    host_b = host.encode("latin-1", "replace")
    out.append((b"x-forwarded-proto", proto_in if is_trusted and proto_in else scheme_b))
    forwarded_host = host_in if is_trusted and host_in else host_b
    if forwarded_host:  # an HTTP/1.0 request may have no Host at all
        out.append((b"x-forwarded-host", forwarded_host))
    if forwarded_header:
        element = _forwarded_element(client, address.version, scheme, host)
        out.append((b"forwarded", _joined(fwd, element) if is_trusted else element))
    out.append((b"x-request-id", request_id.encode("latin-1")))
    # W3C Trace Context §3.2: more than one traceparent is invalid; tracestate without a valid
    # traceparent must be dropped.
    if len(trace) == 1 and valid_traceparent(trace[0]):
        out.append((b"traceparent", trace[0]))
        out.extend(tracestate)
    elif traceparent == "create":
        out.append((b"traceparent", new_traceparent()))
    return out


def forwarding_lines(
    client_ip: str,
    scheme: str,
    host: str,
    trusted: tuple[IPNetwork, ...] = (),
    forwarded_header: bool = False,
) -> bytes:
    """What `forward_headers` appends to a request that has none of the `REWRITTEN` fields,
    before X-Request-ID, as `name: value\r\n` lines: Via, X-Forwarded-*, Forwarded. It
    depends only on the arguments (the client, and what it asked l4lb for), so a caller can
    make it once per client connection and Host and only append it per request."""
    fields = forward_headers(
        [], client_ip, scheme, host, "", trusted, forwarded_header=forwarded_header
    )
    return b"".join(n + b": " + v + b"\r\n" for n, v in fields if n != b"x-request-id")


# -- response security headers -------------------------------------------------------------------


def security_headers(
    hsts_max_age: int | None = None,
    include_subdomains: bool = False,
    frame_options: str | None = None,
    content_type_options: bool = False,
    referrer_policy: str | None = None,
) -> Headers:
    """Response headers from a listener's security settings. Build once at config load and
    add to every response; raises ValueError for a value browsers would not understand.

    - Strict-Transport-Security (RFC 6797 §6.1): `max-age=N[; includeSubDomains]`. Send it on
      https only: browsers ignore it over http (RFC 6797 §8.1).
    - X-Frame-Options (RFC 7034): DENY or SAMEORIGIN (ALLOW-FROM is obsolete and ignored).
    - X-Content-Type-Options: nosniff (WHATWG Fetch).
    - Referrer-Policy (W3C Referrer Policy §4): one policy, or a comma-separated fallback list.
    """
    out: Headers = []
    if hsts_max_age is not None:
        if hsts_max_age < 0:
            raise ValueError("hsts_max_age must not be negative")
        value = f"max-age={hsts_max_age}"
        if include_subdomains:
            value += "; includeSubDomains"
        out.append((b"strict-transport-security", value.encode("ascii")))
    if frame_options is not None:
        option = frame_options.upper()
        if option not in ("DENY", "SAMEORIGIN"):
            raise ValueError(f"frame_options must be DENY or SAMEORIGIN, not {frame_options!r}")
        out.append((b"x-frame-options", option.encode("ascii")))
    if content_type_options:
        out.append((b"x-content-type-options", b"nosniff"))
    if referrer_policy is not None:
        policies = [p.strip().lower() for p in referrer_policy.split(",")]
        for policy in policies:
            if policy not in _REFERRER_POLICIES:
                raise ValueError(f"unknown referrer policy {policy!r}")
        out.append((b"referrer-policy", ", ".join(policies).encode("ascii")))
    return out
