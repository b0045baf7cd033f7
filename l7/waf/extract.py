"""A request as the values each WAF target names, decoded (`l7.waf.decode`).

Targets (a rule lists the ones it inspects, `l7.waf.rules.TARGETS`):

- `method`: the request method; `raw`: the request-target as received (for encodings
  that decoding would hide: overlong UTF-8, `%u`, invalid percent signs);
- `path`: the decoded path; `query`: the names and values of the query parameters;
- `form`: the names and values of an `application/x-www-form-urlencoded` body, or the keys
  and string values of a JSON body (any depth, at most `_JSON_ITEMS` of them);
- `body`: any other inspected body (text/*, XML, multipart, or JSON that does not parse),
  as text;
- `cookies`: cookie names and values; `headers`: the values of the header fields that are
  free text or carry URLs (User-Agent, Referer, X-* ...). Fields with a fixed grammar that
  the HTTP parser or other stages check (Accept*, Content-Length, Authorization,
  If-*, Sec-Fetch-*...) are left out, as CRS leaves most of them to its protocol rules.

Each value is scanned on its own (a rule's `^` and `$` are the value's start and end, and
no match spans two values). Bodies are bounded by the caller.

`request_text` is the same values as one text, one value a line, for the matcher's screen
(`l7.waf.matcher.CompiledRules.screen`): one Hyperscan call says whether any rule can
match, and only then are the values taken apart (`request_values`). It skips the copies
and decoding calls that cannot change a value (a value with no `%`, `&`, `\\` or `+` and
only ASCII is its own decoded form), but it must give exactly the lines `request_values`
gives: tests/unit/test_waf_screen.py checks the two against each other. It is made of
three parts, which the screen also takes one at a time (`CompiledRules.screen_request`):
`target_text` (the request line), `header_text` (of the raw values `header_parts` picks)
and `body_text`.
"""

from __future__ import annotations

import json
from typing import Any, Final
from urllib.parse import parse_qsl

from l7.model import Request
from l7.waf.decode import normalise

__all__ = [
    "BODY_TYPES",
    "body_kind",
    "body_text",
    "header_parts",
    "header_text",
    "request_text",
    "request_values",
    "target_text",
]

_SKIP_HEADERS: Final = frozenset(
    {
        b"accept",
        b"accept-encoding",
        b"accept-language",
        b"accept-charset",
        b"authorization",
        b"cache-control",
        b"connection",
        b"content-length",
        b"content-type",
        b"cookie",
        b"host",
        b"if-match",
        b"if-modified-since",
        b"if-none-match",
        b"if-range",
        b"if-unmodified-since",
        b"pragma",
        b"priority",
        b"te",
        b"upgrade-insecure-requests",
        b"dnt",
        b"x-request-id",
        b"traceparent",
        b"tracestate",
    }
)
_SKIP_PREFIXES: Final = (b"sec-fetch-", b"sec-ch-", b":")
_JSON_ITEMS: Final = 10_000

#: Body media types inspected, and how: "form", "json" or "text".
BODY_TYPES: Final = {
    "application/x-www-form-urlencoded": "form",
    "application/json": "json",
    "application/xml": "text",
    "multipart/form-data": "text",
}


def body_kind(content_type: bytes | None) -> str:
    """How a body of this Content-Type is inspected ("form", "json", "text"), or "" when
    it is not (binary and unknown types pass uninspected, as ModSecurity's default)."""
    if content_type is None:
        return ""
    media = content_type.split(b";", 1)[0].strip().lower().decode("latin-1")
    kind = BODY_TYPES.get(media)
    if kind is not None:
        return kind
    if media.endswith("+json"):
        return "json"
    if media.startswith("text/") or media.endswith("+xml"):
        return "text"
    return ""


def _pairs(text: str, out: list[str]) -> None:
    for name, value in parse_qsl(text, keep_blank_values=True, errors="replace"):
        out.append(normalise(name))
        if value:
            out.append(normalise(value))


def _walk(node: Any, out: list[str]) -> None:
    stack = [node]
    while stack and len(out) < _JSON_ITEMS:
        item = stack.pop()
        if isinstance(item, str):
            out.append(normalise(item))
        elif isinstance(item, dict):
            for key, value in item.items():
                out.append(normalise(key))
                stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)


def request_values(
    request: Request, body: bytes | None, kind: str, wanted: frozenset[str]
) -> dict[str, list[str]]:
    """The values of the `wanted` targets of `request` (and `body`, inspected as `kind`)."""
    out: dict[str, list[str]] = {}
    if "method" in wanted:
        out["method"] = [request.method]
    if "raw" in wanted:
        out["raw"] = [request.target]
    if "path" in wanted:
        out["path"] = [normalise(request.path)]
    if "query" in wanted and request.query:
        values: list[str] = []
        _pairs(request.query, values)
        out["query"] = values
    cookies: list[str] = []
    headers: list[str] = []
    for name, value in request.headers:
        if name == b"cookie":
            for part in value.decode("utf-8", "replace").split(";"):
                key, _, val = part.strip().partition("=")
                cookies.append(normalise(key))
                if val:
                    cookies.append(normalise(val))
        elif name not in _SKIP_HEADERS and not name.startswith(_SKIP_PREFIXES):
            headers.append(normalise(value.decode("utf-8", "replace")))
    if cookies and "cookies" in wanted:
        out["cookies"] = cookies
    if headers and "headers" in wanted:
        out["headers"] = headers
    if body and kind:
        text = body.decode("utf-8", "replace")
        items: list[str] = []
        if kind == "form":
            _pairs(text, items)
        elif kind == "json":
            try:
                _walk(json.loads(text), items)
            except (ValueError, RecursionError):
                kind = "text"
        if kind == "text":
            out["body"] = [normalise(text)]
        elif items:
            out["form"] = items
    return out


def _plain_bytes(data: bytes) -> bool:
    # (bytes: `37 in data`, an int, is a memchr; `b"%" in data` first tries the needle as an
    # int and formats a TypeError, three times the cost of the search)
    return 37 not in data and 38 not in data and 92 not in data and data.isascii()  # % & \


# How each header field name is screened: 0 left out, 1 cookie, 2 free text. Learnt per
# name as requests bring them (a dict lookup instead of a set test and a prefix test per
# field), bounded: names past `_KINDS_MAX` are worked out each time and not kept.
_KINDS: Final[dict[bytes, int]] = {}
_KINDS_MAX: Final = 1024


def _kind(name: bytes) -> int:
    if name == b"cookie":
        kind = 1
    elif name in _SKIP_HEADERS or name.startswith(_SKIP_PREFIXES):
        kind = 0
    else:
        kind = 2
    if len(_KINDS) < _KINDS_MAX:
        _KINDS[name] = kind
    return kind


def header_parts(request: Request, wanted: frozenset[str]) -> tuple[list[bytes], list[bytes]]:
    """The raw values of the `wanted` header fields of `request`: (free-text fields, Cookie
    fields), each in the order received. `header_text` makes their lines."""
    free: list[bytes] = []
    cookies: list[bytes] = []
    want_free = "headers" in wanted
    want_cookies = "cookies" in wanted
    if not want_free and not want_cookies:
        return free, cookies
    kinds = _KINDS
    for field, raw in request.headers:
        kind = kinds.get(field)
        if kind is None:
            kind = _kind(field)
        if kind == 2:
            if want_free:
                free.append(raw)
        elif kind == 1 and want_cookies:
            cookies.append(raw)
    return free, cookies


def _add_target(
    request: Request, wanted: frozenset[str], out: list[str], raw_needs_percent: bool = False
) -> None:
    add = out.append
    target = request.target
    # A target with no `%`, `\\` and only ASCII has plain path and query: no decoding call
    # can change them (normalise's own test, written out once: a call costs more).
    no_percent = "%" not in target
    plain = no_percent and "\\" not in target and target.isascii()
    if "method" in wanted:
        add(request.method)
    if "raw" in wanted and not (raw_needs_percent and no_percent):
        add(target)
    if "path" in wanted:
        path = request.path
        add(path if plain and "&" not in path else normalise(path))
    query = request.query
    if query and "query" in wanted:
        if not plain:
            _pairs(query, out)
        else:  # parse_qsl's result, without its unquote calls (there is nothing to unquote)
            if "+" in query:
                query = query.replace("+", " ")
            for piece in query.split("&"):
                add(piece.replace("=", "\n", 1))  # its name and its value, a line each


def _add_headers(free: list[bytes], cookies: list[bytes], out: list[str]) -> None:
    add = out.append
    for raw in cookies:
        text = raw.decode("utf-8", "replace")
        plain = "%" not in text and "&" not in text and "\\" not in text and text.isascii()
        for part in text.split(";"):
            key, _, val = part.strip().partition("=")
            add(key if plain else normalise(key))
            if val:
                add(val if plain else normalise(val))
    if free:
        joined = b"\n".join(free)
        if _plain_bytes(joined):  # one test and one decoding for all of them
            add(joined.decode("ascii"))
        else:
            for raw in free:
                add(normalise(raw.decode("utf-8", "replace")))


def _add_body(body: bytes | None, kind: str, out: list[str]) -> None:
    if body and kind:
        for texts in request_values(_NO_HEAD, body, kind, _NO_TARGETS).values():
            out.extend(texts)


def target_text(request: Request, wanted: frozenset[str], raw_needs_percent: bool = False) -> str:
    """The lines of the method, request-target, path and query values (what `request_text`
    holds of the request line). With `raw_needs_percent` (every `raw` rule needs a `%` to
    match, `l7.waf.needs`), a request-target with no `%` is left out: no rule can match it."""
    out: list[str] = []
    _add_target(request, wanted, out, raw_needs_percent)
    return "\n".join(out)


def header_text(free: list[bytes], cookies: list[bytes]) -> str:
    """The lines of the header values `header_parts` gave."""
    out: list[str] = []
    _add_headers(free, cookies, out)
    return "\n".join(out)


def body_text(body: bytes | None, kind: str) -> str:
    """The lines of an inspected body's values."""
    out: list[str] = []
    _add_body(body, kind, out)
    return "\n".join(out)


def request_text(request: Request, body: bytes | None, kind: str, wanted: frozenset[str]) -> str:
    """Every value `request_values` gives, one a line ("\\n" between them), in one string:
    the lines of `target_text`, `header_text` and `body_text` together. (It may also hold
    empty lines, which no rule can match alone.)"""
    out: list[str] = []
    _add_target(request, wanted, out)
    free, cookies = header_parts(request, wanted)
    _add_headers(free, cookies, out)
    _add_body(body, kind, out)
    return "\n".join(out)


_NO_HEAD: Final = Request("GET", "", [])
_NO_TARGETS: Final[frozenset[str]] = frozenset()
