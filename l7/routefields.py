"""The value converters and key tables of a route's TOML (`[[listener.NAME.routes]]`).

Each converter turns one TOML value into what `l7.routes` holds, or raises `BadValue` with
what is allowed, which the loader reports at the key (file, key path, line). Shared with the
stage configs (l7/stageconf.py), which check header names the same way.
"""

from __future__ import annotations

import difflib
import re
from string import Formatter
from typing import Any

from l4lb.config.tables import NAME as _NAME
from l4lb.config.tables import REQUIRED as _REQUIRED
from l4lb.config.tables import Fields
from l4lb.config.tables import names as _names
from l4lb.config.tables import strings as _strings
from l4lb.config.values import BadValue, boolean, integer, string
from l7.routes import PLACEHOLDERS, REDIRECT_STATUSES

__all__ = [
    "_FIELD_VALUE",
    "_HEADER_MATCH",
    "_HEADER_OPS",
    "_QUERY_MATCH",
    "_REDIRECT",
    "_RESPOND",
    "_ROUTE",
    "_TOKEN",
    "_UNTOUCHABLE",
    "_any",
    "_field_name",
    "_field_value",
    "_methods",
    "_name",
    "_path",
    "_redirect_status",
    "_regex",
    "_template",
]

# RFC 9110 §5.6.2: field names and methods are tokens.
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# Field values: no control characters but HTAB (RFC 9110 §5.5), so no CR/LF injection.
_FIELD_VALUE = re.compile(r"^[^\x00-\x08\x0a-\x1f\x7f]*$")
# Framing and hop-by-hop fields (RFC 9110 §7.6.1, RFC 9112 §6): changing them on one side of
# a proxy desynchronises message boundaries (request smuggling), so routes may not touch them.
_UNTOUCHABLE = frozenset(
    {
        "connection",
        "content-length",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


def _path(value: Any) -> str:
    text = string(value)
    if not text.startswith("/"):
        raise BadValue(f"{text!r} does not start with '/'", 'a path such as "/api/"')
    if "?" in text:
        raise BadValue(
            f"{text!r} contains '?': paths are matched without the query",
            'a path, and query = [{name = "...", equals = "..."}] for the query',
        )
    return text


def _regex(value: Any) -> re.Pattern[str]:
    text = string(value)
    try:
        return re.compile(text)
    except re.error as exc:
        raise BadValue(
            f"{text!r} is not a valid regex: {exc}",
            "a Python regular expression, matched against the whole value",
        ) from None


def _methods(value: Any) -> tuple[str, ...]:
    allowed = 'method names such as "GET", "HEAD", "POST"'
    methods = _strings(value)
    for method in methods:
        if not _TOKEN.match(method):
            raise BadValue(f"{method!r} is not a method", allowed)
        if method != method.upper():
            raise BadValue(
                f"{method!r} is not {method.upper()!r}: methods are case-sensitive (RFC 9110 §9.1)",
                allowed,
            )
    return tuple(dict.fromkeys(methods))


def _name(value: Any) -> str:
    text = string(value)
    if not _NAME.match(text):
        raise BadValue(
            f"{text!r} is not a valid name", "letters, digits, '_', '-', '.', up to 64 characters"
        )
    return text


def _field_name(value: Any) -> str:
    text = string(value)
    if not _TOKEN.match(text):
        raise BadValue(f"{text!r} is not a header name", "letters, digits and !#$%&'*+.^_`|~-")
    return text.lower()


def _field_value(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise BadValue(f"expected a string, got {value!r}", "a quoted string")
    text = str(value)
    if not _FIELD_VALUE.match(text):
        raise BadValue(f"{text!r} contains a control character", "printable text")
    return text


def _template(value: Any) -> tuple[tuple[str, str | None], ...]:
    """Parse a redirect target; placeholders are checked here so a typo fails at load."""
    text = string(value)
    allowed = ", ".join("{" + p + "}" for p in PLACEHOLDERS) + "; {{ and }} for braces"
    if not text or not all(c.isascii() and c.isprintable() and c != " " for c in text):
        raise BadValue(
            f"{text!r} is empty or has spaces, control or non-ASCII characters",
            allowed + "; percent-encode anything else",
        )
    try:
        parsed = list(Formatter().parse(text))
    except ValueError as exc:
        raise BadValue(f"{text!r} is not a valid target: {exc}", allowed) from None
    pieces: list[tuple[str, str | None]] = []
    for literal, field, spec, conversion in parsed:
        if field is not None and (field not in PLACEHOLDERS or spec or conversion):
            shown = "{" + field + (f"!{conversion}" if conversion else "")
            shown += (f":{spec}" if spec else "") + "}"
            close = difflib.get_close_matches(field, PLACEHOLDERS, n=1, cutoff=0.6)
            hint = f"; did you mean '{{{close[0]}}}'?" if close else ""
            raise BadValue(f"unknown placeholder {shown!r}{hint}", allowed)
        pieces.append((literal, field))
    return tuple(pieces)


def _redirect_status(value: Any) -> int:
    if isinstance(value, bool) or value not in REDIRECT_STATUSES:
        raise BadValue(
            f"{value!r} is not a redirect status", ", ".join(map(str, REDIRECT_STATUSES))
        )
    return int(value)


def _any(value: Any) -> Any:
    return value  # a nested table or list, validated by its own _Loader.table call


_ROUTE: Fields = {
    "name": (_name, None),
    "host": (lambda v: _names(v, wildcard=True), ()),
    "path_prefix": (_path, None),
    "path": (_path, None),
    "path_regex": (_regex, None),
    "methods": (_methods, ()),
    "headers": (_any, ()),
    "query": (_any, ()),
    "pool": (_name, None),
    "redirect": (_any, None),
    "respond": (_any, None),
    "strip_prefix": (_path, None),
    "replace_prefix": (_path, None),
    "request_headers": (_any, None),
    "response_headers": (_any, None),
    "access": (_any, None),
    "rate_limits": (_any, ()),
    "compress": (_any, None),
    "cache": (_name, ""),
    "jwt": (_any, None),
    "waf": (_any, None),
}
_HEADER_MATCH: Fields = {
    "name": (_field_name, _REQUIRED),
    "equals": (_field_value, None),
    "present": (boolean, None),
    "regex": (_regex, None),
}
_QUERY_MATCH: Fields = {
    "name": (string, _REQUIRED),
    "equals": (_field_value, None),  # `equals = 2` reads naturally for `?v=2`
    "present": (boolean, None),
    "regex": (_regex, None),
}
_REDIRECT: Fields = {
    "status": (_redirect_status, 302),  # HAProxy's `redirect` default
    "to": (_template, _REQUIRED),
}
_RESPOND: Fields = {
    "status": (integer(200, 599), 200),  # HAProxy's `http-request return` default
    "body": (string, ""),
    "content_type": (_field_value, "text/plain; charset=utf-8"),
}
_HEADER_OPS: Fields = {"add": (_any, None), "set": (_any, None), "remove": (_any, None)}
