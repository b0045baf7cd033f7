"""Request-head checks every HTTP/1.1 adapter runs after its parser, before any pipeline stage.

Defence in depth against request smuggling: the parsers we use (h11, httptools/llhttp) each
enforce most of RFC 9112, but not all of the same rules, and a request two hops read differently
is how smuggling starts (RFC 9112 §11.2). Running the same checks after every parser makes l4lb
behave the same whichever parser is installed. Limits are checked first, like nginx and HAProxy
do while reading, so a huge head is refused with its own status before being looked at.

Statuses (each raise is a `RemoteProtocolError` whose `status_hint` is the answer to send):

- 414 URI Too Long: request-target longer than `max_uri` (nginx: `large_client_header_buffers`
  8k; HAProxy `tune.bufsize`).
- 431 Request Header Fields Too Large (RFC 6585 §5): more than `max_headers` fields (HAProxy's
  `tune.http.maxhdr` is 101, Envoy's `max_headers_count` 100) or more than `max_header_bytes`
  of `name: value\\r\\n` lines (nginx 4x8k, Envoy 60k).
- 400 Bad Request: everything RFC 9112 calls an invalid message: both Content-Length and
  Transfer-Encoding (§6.3 rule 3 lets a server choose; we reject like Envoy without
  `allow_chunked_length`, as the combination has no honest use); differing Content-Length
  values, also within one comma-separated line, and non-digit ones (§6.3 rule 5; identical
  repeats are tolerated, RFC 9110 §8.6); chunked not the final coding or applied twice (§6.3
  rule 4, §7); Transfer-Encoding in HTTP/1.0 (§6.1); a field name that is not a token or a
  value with CR, LF or NUL (RFC 9110 §5.5; other control characters are kept, as the RFC
  allows and nginx does); a missing Host in HTTP/1.1, more than one Host, or an invalid Host
  (§3.2); a method that is not a token or a request-target with spaces or control characters,
  or in a form the method does not allow (§3.2).
- 501 Not Implemented (§6.1: "a server that receives a request message with a transfer coding
  it does not understand SHOULD respond with 501"): any well-formed Transfer-Encoding other
  than exactly `chunked` (e.g. `gzip, chunked`). l4lb decodes no other coding and would
  otherwise forward a body whose coding the server is never told about.

`check_raw_head` looks at the raw head bytes for what a lenient parser may have accepted silently
(obs-fold, bare CR or LF, whitespace before a colon); `check_chunk_size_line` checks one
chunk-size line; `BodyLimit` enforces the maximum body size (413).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from l4lb.errors import RemoteProtocolError
from l7.model import Headers

__all__ = [
    "BodyLimit",
    "check_chunk_size_line",
    "check_raw_head",
    "check_request_head",
    "content_length",
    "valid_host",
]

# RFC 9110 §5.6.2 token.
_TCHAR: Final = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
_TOKEN_BYTES: Final = re.compile(_TCHAR + rb"+")
_TOKEN_STR: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 9110 §5.5: CR, LF and NUL are invalid and dangerous in a field value.
_BAD_VALUE: Final = re.compile(rb"[\x00\r\n]")
# RFC 9112 §3.2: request-target has no whitespace; no control characters either.
_BAD_TARGET: Final = re.compile(r"[\x00-\x20\x7f]")
_ABSOLUTE_FORM: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
# RFC 9110 §7.2 / RFC 3986 §3.2.2: Host = uri-host [ ":" port ]; IP-literal or reg-name.
_HOST: Final = re.compile(
    rb"(?:\[[0-9A-Za-z:._~!$&'()*+,;=%\-]+\]|[A-Za-z0-9._~!$&'()*+,;=%\-]*)(?::[0-9]*)?"
)
_OWS: Final = b" \t"
# A Content-Length beyond 2**63 is nonsense and big enough to trip int limits elsewhere.
_MAX_LENGTH_DIGITS: Final = 18

_UNSUPPORTED_CODINGS: Final = 501

# Memos of what passed before, so that the names, methods and hosts a client repeats on every
# request are checked once per process instead of once per request (each holds at most
# _MEMO_SIZE entries; it is emptied when full). A field name maps to what the head check
# needs to know of it: one of the _KIND_* values.
_MEMO_SIZE: Final = 4096
_KIND_OTHER, _KIND_LENGTH, _KIND_CODING, _KIND_HOST, _KIND_EXPECT = range(5)
_NAME_KINDS: Final[dict[bytes, int]] = {}
_SPECIAL_KINDS: Final = {
    b"content-length": _KIND_LENGTH,
    b"transfer-encoding": _KIND_CODING,
    b"host": _KIND_HOST,
    b"expect": _KIND_EXPECT,
}
_GOOD_METHODS: Final[set[str]] = set()
_GOOD_HOSTS: Final[set[bytes]] = set()


def _name_kind(name: bytes) -> int:
    """What `name` is to the head check; raises 400 if it is not a token."""
    kind = _NAME_KINDS.get(name)
    if kind is None:
        if not _TOKEN_BYTES.fullmatch(name):
            raise _bad(f"invalid header field name {name[:40]!r}")
        if len(_NAME_KINDS) >= _MEMO_SIZE:
            _NAME_KINDS.clear()
        kind = _NAME_KINDS[name] = _SPECIAL_KINDS.get(name.lower(), _KIND_OTHER)
    return kind


def _bad(message: str, status: int = 400) -> RemoteProtocolError:
    return RemoteProtocolError(message, status_hint=status)


def check_request_head(
    method: str,
    target: str,
    headers: Headers,
    version: str = "1.1",
    max_uri: int = 8192,
    max_header_bytes: int = 32768,
    max_headers: int = 100,
) -> tuple[bytes | None, int, bool, bool]:
    """Check one parsed request head; return what it found if it may go on, else raise.

    What it found, so that the adapter does not walk the fields again: `(host, length,
    chunked, expect_continue)`, the Host value (None if absent), the body length (-1 without
    Content-Length), whether the body is chunked, and whether the client sent
    `Expect: 100-continue`.

    `headers` are (name, value) pairs as the parser gave them; names are compared
    case-insensitively, so an adapter that does not lower-case cannot open a gap.
    Raises `RemoteProtocolError` with `status_hint` 400, 414, 431 or 501 (module docstring).
    """
    if len(target) > max_uri:
        raise _bad(f"request-target longer than {max_uri} characters", 414)
    if len(headers) > max_headers:
        raise _bad(f"more than {max_headers} header fields", 431)
    _check_request_line(method, target)

    size = 0
    lengths: list[bytes] | None = None
    codings: list[bytes] | None = None
    hosts: list[bytes] | None = None
    expect = False
    kinds = _NAME_KINDS
    for name, value in headers:
        size += len(name) + len(value) + 4
        if size > max_header_bytes:
            raise _bad(f"header fields larger than {max_header_bytes} bytes", 431)
        kind = kinds.get(name)
        if kind is None:
            kind = _name_kind(name)
        if kind:
            if kind == _KIND_HOST:
                if hosts is None:
                    hosts = [value]
                else:
                    hosts.append(value)
            elif kind == _KIND_LENGTH:
                if lengths is None:
                    lengths = [value]
                else:
                    lengths.append(value)
            elif kind == _KIND_CODING:
                if codings is None:
                    codings = [value]
                else:
                    codings.append(value)
            else:
                expect = expect or value.lower() == b"100-continue"

    # All values in one pass (the tab between them is allowed in a value, so it cannot hide
    # or make a match); `int in bytes` is a memchr, cheaper than the regex, which only runs to
    # name the field (`b"\0" in` would first fail to read b"\0" as an int, an exception each).
    if headers:
        joined = b"\t".join([value for _, value in headers])
        if 0 in joined or 13 in joined or 10 in joined:  # NUL, CR, LF
            for name, value in headers:
                if _BAD_VALUE.search(value):
                    raise _bad(f"CR, LF or NUL in the value of {name[:40]!r}")

    length = -1
    if codings is not None:
        if lengths is not None:
            raise _bad("both Content-Length and Transfer-Encoding")
        if version != "1.1":
            raise _bad(f"Transfer-Encoding in an HTTP/{version} request")
        _check_transfer_encoding(codings)
    elif lengths is not None:
        length = content_length(lengths)
    _check_host(hosts or (), version)
    return (hosts[0] if hosts else None, length, codings is not None, expect)


def _check_request_line(method: str, target: str) -> None:
    if method not in _GOOD_METHODS:
        if not _TOKEN_STR.fullmatch(method):
            raise _bad(f"invalid method {method[:40]!r}")
        if len(_GOOD_METHODS) >= _MEMO_SIZE:
            _GOOD_METHODS.clear()
        _GOOD_METHODS.add(method)
    # isprintable() rules out every control character in one C pass; only a space or an
    # unusual (non-printable non-ASCII) character needs the regex.
    if not target or ((not target.isprintable() or " " in target) and _BAD_TARGET.search(target)):
        raise _bad("request-target empty or with whitespace or control characters")
    first = target[0]
    if method == "CONNECT":  # RFC 9112 §3.2.3: authority-form only
        if first == "/" or first == "*" or not _HOST.fullmatch(target.encode("latin-1", "replace")):
            raise _bad("CONNECT needs an authority-form request-target")
    elif first == "*":  # RFC 9112 §3.2.4: asterisk-form is "*" alone, for OPTIONS only
        if target != "*" or method != "OPTIONS":
            raise _bad("asterisk-form request-target outside OPTIONS *")
    elif first != "/" and not _ABSOLUTE_FORM.match(target):
        raise _bad("request-target is neither origin-form nor absolute-form")


def content_length(values: list[bytes]) -> int:
    """The body length from the Content-Length field lines: every comma-separated element must
    be digits and all must be equal (RFC 9112 §6.3 rule 5, RFC 9110 §8.6). Raises 400."""
    length = -1
    for value in values:
        for element in value.split(b","):
            element = element.strip(_OWS)
            if not element.isdigit() or len(element) > _MAX_LENGTH_DIGITS:
                raise _bad(f"invalid Content-Length {value[:40]!r}")
            number = int(element)
            if length not in (-1, number):
                raise _bad("Content-Length values differ")
            length = number
    return length


def _check_transfer_encoding(values: list[bytes]) -> None:
    """Only `chunked`, once: anything else is 400 (malformed, or chunked not last or repeated)
    or 501 (well-formed codings l4lb cannot decode)."""
    codings = [c.strip(_OWS).lower() for v in values for c in v.split(b",")]
    for coding in codings:
        if not _TOKEN_BYTES.fullmatch(coding):  # empty elements, parameters, junk
            raise _bad("malformed Transfer-Encoding")
    if codings[-1] != b"chunked":
        raise _bad("chunked is not the final transfer coding")
    if codings.count(b"chunked") > 1:
        raise _bad("chunked applied more than once")
    if len(codings) > 1:
        raise _bad("transfer codings other than chunked", _UNSUPPORTED_CODINGS)


def _check_host(hosts: Sequence[bytes], version: str) -> None:
    if len(hosts) > 1:
        raise _bad("more than one Host header field")
    if not hosts:
        if version == "1.1":
            raise _bad("HTTP/1.1 request without Host")
        return
    host = hosts[0]
    if host not in _GOOD_HOSTS:
        if not _HOST.fullmatch(host.strip(_OWS)):
            raise _bad(f"invalid Host {host[:60]!r}")
        if len(_GOOD_HOSTS) >= _MEMO_SIZE:
            _GOOD_HOSTS.clear()
        _GOOD_HOSTS.add(host)


def valid_host(value: bytes) -> bool:
    """Is `value` a valid Host (RFC 9110 §7.2: uri-host [":" port])? An empty host is."""
    return _HOST.fullmatch(value) is not None


# -- raw head ----------------------------------------------------------------------------------


def check_raw_head(raw: bytes) -> None:
    """Check the raw bytes of a request head (request line through the empty line, which may be
    left off) for what some parsers accept and RFC 9112 does not; raise 400 on any:

    - NUL anywhere; a bare CR (§2.2: invalid) or a bare LF (§2.2 lets a recipient accept it as
      a line end; we do not, so every hop agrees where lines end);
    - obs-fold, a field line starting with SP or HTAB (§5.2: "MUST either reject ... with 400
      or replace each obs-fold with SP"), including whitespace before the first field (§2.2);
    - a field line without a colon, or whitespace between name and colon (§5.1: "MUST reject
      ... with a response status code of 400").

    Empty lines before the request line are allowed (§2.2: a server SHOULD ignore at least
    one). Cost: a few C-level scans of the head; for adapters whose parser is lenient.
    """
    if 0 in raw:  # NUL (an int needle: a memchr, no failed int conversion first)
        raise _bad("NUL in the request head")
    crlf = raw.count(b"\r\n")
    if raw.count(b"\r") != crlf:
        raise _bad("bare CR in the request head")
    if raw.count(b"\n") != crlf:
        raise _bad("bare LF in the request head")
    lines = raw.split(b"\r\n")
    start = 0
    while start < len(lines) and not lines[start]:
        start += 1
    for line in lines[start + 1 :]:
        if not line:
            break  # end of the head
        if line[0] in _OWS:
            raise _bad("obs-fold or whitespace before a header field")
        colon = line.find(b":")
        if colon <= 0:
            raise _bad("header field line without a name and colon")
        if line[colon - 1] in _OWS:
            raise _bad("whitespace between a header field name and its colon")


# -- chunked body ------------------------------------------------------------------------------

# RFC 9112 §7.1: chunk-size [chunk-ext] CRLF; chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS
# ( token / quoted-string ) ] ). At most 16 hex digits (2**64 - 1), like nginx's overflow check.
_QUOTED: Final = rb'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'
_CHUNK_LINE: Final = re.compile(
    rb"([0-9A-Fa-f]{1,16})"
    rb"(?:[ \t]*;[ \t]*" + _TCHAR + rb"+(?:[ \t]*=[ \t]*(?:" + _TCHAR + rb"+|" + _QUOTED + rb"))?)*"
)
# Node.js caps chunk extensions at 16 KiB after CVE-2024-22019; a chunk-size line has no reason
# to be anywhere near that.
MAX_CHUNK_LINE: Final = 4096


def check_chunk_size_line(line: bytes, max_line: int = MAX_CHUNK_LINE) -> int:
    """Check one chunk-size line (with or without its CRLF) and return the chunk size.

    Hex digits only (no sign, `0x`, or surrounding whitespace), well-formed extensions only,
    and at most `max_line` bytes: lenient chunk parsing is a classic smuggling vector (a proxy
    and a server that disagree on where a chunk ends see different requests). Raises
    `RemoteProtocolError` with 400.
    """
    if len(line) > max_line:
        raise _bad(f"chunk-size line longer than {max_line} bytes")
    if line.endswith(b"\r\n"):
        line = line[:-2]
    match = _CHUNK_LINE.fullmatch(line)
    if match is None:
        raise _bad(f"invalid chunk-size line {line[:40]!r}")
    return int(match.group(1), 16)


# -- body size ---------------------------------------------------------------------------------


class BodyLimit:
    """Counts request body bytes and refuses more than `limit` (nginx `client_max_body_size`,
    HAProxy/Envoy buffer limits). `limit=None` means unlimited."""

    __slots__ = ("limit", "received")

    def __init__(self, limit: int | None) -> None:
        if limit is not None and limit < 0:
            raise ValueError("limit must not be negative")
        self.limit = limit
        self.received = 0

    def declare(self, content_length: int | None) -> None:
        """Refuse a declared Content-Length over the limit before reading any of the body,
        as nginx does. Raises `RemoteProtocolError` with 413."""
        if self.limit is not None and content_length is not None and content_length > self.limit:
            raise _bad(f"request body of {content_length} bytes over {self.limit}", 413)

    def add(self, n: int) -> None:
        """Count `n` more body bytes. Raises `RemoteProtocolError` with 413 past the limit."""
        self.received += n
        if self.limit is not None and self.received > self.limit:
            raise _bad(f"request body larger than {self.limit} bytes", 413)
