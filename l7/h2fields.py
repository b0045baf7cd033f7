"""Is an HTTP/2 request's field section well-formed? RFC 9113 §8.2 and §8.3, sans-IO.

The HTTP/2 adapter (l7/h2.py) runs these on every request head and trailer section it
receives, with the HTTP/2 library's own inbound validation turned off: what is malformed is
decided here, the same whichever library decodes the frames (python-hyper `h2` and its fork
`jh2` disagree, e.g. on a plain CONNECT, which RFC 9113 §8.5 sends without `:path`). A
malformed request is a stream error of type PROTOCOL_ERROR (§8.1.1): the adapter resets the
stream and forwards nothing of it. What is well-formed HTTP/2 but not acceptable as HTTP
(limits, Content-Length values, the request-target's form, a method that is not a token) is
l7/validate.py's, run after this on every HTTP version.

The rules, each a reason string when broken:
- field names (§8.2.1): not empty, no byte 0x00-0x20, 0x41-0x5a (upper case) or 0x7f-0xff,
  no colon except the leading one of a pseudo-header;
- field values (§8.2.1): no NUL, CR or LF, no SP or HTAB first or last;
- connection-specific fields (§8.2.2): none of connection, keep-alive, proxy-connection,
  transfer-encoding, upgrade; `te` only with the value "trailers";
- pseudo-headers (§8.3): only `:method`, `:scheme`, `:authority`, `:path` (and `:protocol`
  where extended CONNECT is offered, RFC 8441 §4), each at most once, all before the regular
  fields; never `:status`; none at all in a trailer section (§8.1);
- a plain CONNECT (no `:protocol`, §8.5) has a non-empty `:authority` and no `:scheme` or
  `:path`; any other request, an extended CONNECT too, has non-empty `:method`, `:scheme` and
  `:path`, and `:authority` or `host`;
- one `host` at most, equal to `:authority` when both come (§8.3.1: one authority for
  routing and forwarding; h2 refused both too).

Field names are looked up in a memo of those seen before (bounded, as l7/validate.py's), so
the names a client repeats are checked once per process, not once per request; the values
are checked together, in one join and one search.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

__all__ = ["request_problem", "trailer_problem"]

# What a field name is to the checks. Pseudo-headers have kinds of their own; the names of
# regular fields are learnt into _KINDS once they passed the character check.
_REGULAR: Final = 0
_HOST: Final = 1
_TE: Final = 2
_CONNECTION: Final = 3
_BAD: Final = 4
_METHOD: Final = 10  # the pseudo-headers, from here up
_SCHEME: Final = 11
_AUTHORITY: Final = 12
_PATH: Final = 13
_PROTOCOL: Final = 14
_STATUS: Final = 15
_UNKNOWN_PSEUDO: Final = 16
_PSEUDO: Final = {
    b":method": _METHOD,
    b":scheme": _SCHEME,
    b":authority": _AUTHORITY,
    b":path": _PATH,
    b":protocol": _PROTOCOL,
    b":status": _STATUS,
}
_SPECIAL: Final = {
    b"host": _HOST,
    b"te": _TE,
    b"connection": _CONNECTION,
    b"keep-alive": _CONNECTION,
    b"proxy-connection": _CONNECTION,
    b"transfer-encoding": _CONNECTION,
    b"upgrade": _CONNECTION,
}
_MEMO_SIZE: Final = 4096
_KINDS: Final[dict[bytes, int]] = {**_PSEUDO, **_SPECIAL}

# §8.2.1: a name is bytes 0x21-0x7e without ':' (0x3a) and without upper case (0x41-0x5a).
_NAME: Final = re.compile(rb"[\x21-\x39\x3b-\x40\x5b-\x7e]+")
_EDGE: Final = (b" ", b"\t")  # §8.2.1: SP or HTAB may not start or end a value


def _kind(name: bytes) -> int:
    """The kind of a name not in the memo yet: `_BAD` or `_UNKNOWN_PSEUDO` if it may not be
    in a request, else learnt."""
    if name[:1] == b":":
        return _UNKNOWN_PSEUDO
    if not _NAME.fullmatch(name):
        return _BAD
    if len(_KINDS) >= _MEMO_SIZE:
        _KINDS.clear()
        _KINDS.update(_PSEUDO)
        _KINDS.update(_SPECIAL)
    _KINDS[name] = _REGULAR
    return _REGULAR


def _bad_value(value: bytes) -> bool:
    """§8.2.1: NUL, CR or LF anywhere, SP or HTAB at either end."""
    return (
        b"\x00" in value
        or b"\r" in value
        or b"\n" in value
        or value[:1] in _EDGE
        or value[-1:] in _EDGE
    )


def _values_problem(fields: Sequence[tuple[bytes, bytes]]) -> str | None:
    """The values joined by LF are screened at once (a few memchr-speed searches, where a
    regular expression with alternatives tried each at every byte cost 35,000 instructions
    per request); only a screen that trips looks at each value. An LF inside a value is
    found by counting them (one per join, no more)."""
    values = b"\n".join([value for _, value in fields])
    if (
        b"\x00" in values
        or b"\r" in values
        or b"\n " in values
        or b"\n\t" in values
        or b" \n" in values
        or b"\t\n" in values
        or values[:1] in _EDGE
        or values[-1:] in _EDGE
        or values.count(b"\n") != len(fields) - 1
    ):
        for name, value in fields:
            if _bad_value(value):
                return f"NUL, CR, LF or surrounding whitespace in the value of {name[:40]!r}"
    return None


def request_problem(fields: Sequence[tuple[bytes, bytes]], connect_protocol: bool) -> str | None:
    """Why the header section of a request (name, value pairs, as HPACK decoded them) is
    malformed, or None if it is well-formed. `connect_protocol`: the connection offered
    extended CONNECT (SETTINGS_ENABLE_CONNECT_PROTOCOL, RFC 8441), so `:protocol` may come."""
    method: bytes | None = None
    scheme: bytes | None = None
    authority: bytes | None = None
    path: bytes | None = None
    protocol: bytes | None = None
    host: bytes | None = None
    regular = False
    seen = 0  # a bit per pseudo-header kind already met
    kinds = _KINDS
    for name, value in fields:
        kind = kinds.get(name)
        if kind is None:
            kind = _kind(name)
        if kind == _REGULAR:
            regular = True
        elif kind >= _METHOD:
            if regular:
                return f"pseudo-header {name[:40]!r} after a regular field"
            if kind == _PROTOCOL and not connect_protocol:
                return f"pseudo-header {name[:40]!r} not allowed in a request"
            if kind <= _PROTOCOL:
                bit = 1 << kind
                if seen & bit:
                    return f"more than one {name.decode()}"
                seen |= bit
                if kind == _METHOD:
                    method = value
                elif kind == _PATH:
                    path = value
                elif kind == _SCHEME:
                    scheme = value
                elif kind == _AUTHORITY:
                    authority = value
                else:
                    protocol = value
            elif kind == _STATUS:
                return ":status in a request"
            else:
                return f"pseudo-header {name[:40]!r} not allowed in a request"
        else:
            regular = True
            if kind == _HOST:
                if host is not None:
                    return "more than one host"
                host = value
            elif kind == _TE:
                if value.lower() != b"trailers":
                    return "te other than trailers"
            elif kind == _CONNECTION:
                return f"connection-specific field {name!r}"
            else:
                return f"invalid field name {name[:40]!r}"
    problem = _values_problem(fields)
    if problem is not None:
        return problem
    if not method:
        return "no :method"
    if method == b"CONNECT" and protocol is None:  # §8.5
        if scheme is not None or path is not None:
            return "CONNECT with :scheme or :path"
        if not authority:
            return "CONNECT without :authority"
    else:
        if protocol is not None and method != b"CONNECT":
            return ":protocol outside CONNECT"
        if not scheme or not path:
            return "no :scheme or :path, or an empty one"
        if authority is None and host is None:
            return "neither :authority nor host"
    if authority is not None and host is not None and host != authority:
        return ":authority and host disagree"
    return None


def trailer_problem(fields: Sequence[tuple[bytes, bytes]]) -> str | None:
    """Why a request's trailer section is malformed, or None: the name and value rules and
    the connection-specific fields as in a header section, and no pseudo-header at all."""
    kinds = _KINDS
    for name, value in fields:
        kind = kinds.get(name)
        if kind is None:
            kind = _kind(name)
        if kind >= _METHOD:
            return f"pseudo-header {name[:40]!r} in a trailer section"
        if kind == _CONNECTION:
            return f"connection-specific field {name!r}"
        if kind == _BAD:
            return f"invalid field name {name[:40]!r}"
        if kind == _TE and value.lower() != b"trailers":
            return "te other than trailers"
    return _values_problem(fields) if fields else None
