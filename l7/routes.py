"""HTTP routes: the validated `[[listener.NAME.routes]]` of an `http`/`https` listener.

A route has conditions (host, path, methods, headers, query) that must all hold, and exactly
one action: forward to a `pool`, `redirect`, or `respond` with a fixed answer. Routes are
tried in order and the first match wins; a route without conditions is the explicit default
(DESIGN.md). The words and semantics are the ones operators know:

- `host`: exact names or `*.example.com`, which matches any depth below the suffix but not
  the suffix itself, like the SNI routes and nginx's `server_name` wildcards.
- `path_prefix`: a plain string prefix, as nginx `location /api` and Envoy `prefix` (so
  `/api` also matches `/apix`; write `/api/` for a segment boundary). `path` is an exact
  match, `path_regex` a full match (Envoy `safe_regex`: anchored at both ends). Paths are
  compared as received, without percent-decoding: normalising them is the job of the limits
  stage that runs before routing.
- `headers` and `query`: `present` (false means absent, as Envoy's `present_match`),
  `equals` (exact, case-sensitive value) or `regex` (full match). Header names are
  case-insensitive; query parameter names are not.
- `strip_prefix` (Traefik's StripPrefix) and `replace_prefix` (Envoy's `prefix_rewrite`).
- header operations: `remove`, then `set`, then `add`, in Envoy's order.

Regexes are Python `re`, compiled at load; a bad one is a config error showing `re`'s message.
This module only validates; `l7.router` matches. It is loaded by `l4lb.config.load` only for
`http`/`https` listeners (DESIGN.md: `l4lb` does not import `l7` at import time).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from string import Formatter
from typing import Any

from l4lb.config.lines import format_path
from l4lb.config.tables import NAME as _NAME
from l4lb.config.tables import REQUIRED as _REQUIRED
from l4lb.config.tables import Fields
from l4lb.config.tables import TableLoader as _Loader
from l4lb.config.tables import names as _names
from l4lb.config.tables import strings as _strings
from l4lb.config.values import BadValue, boolean, integer, string
from l7.guard import RouteSecurity, parse_security
from l7.jwtconf import JwtConfig, check_route, parse_route_jwt

__all__ = [
    "PLACEHOLDERS",
    "Forward",
    "HeaderOps",
    "HttpRoute",
    "Redirect",
    "Respond",
    "ValueMatch",
    "parse_routes",
    "referenced_pools",
]

Path_ = list[str | int]

#: What a redirect target may contain. `target` is `path` plus `?query` when there is one.
PLACEHOLDERS = ("scheme", "host", "path", "query", "target")
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
ACTIONS = ("pool", "redirect", "respond")
PATH_KINDS = ("path_prefix", "path", "path_regex")

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


@dataclass(frozen=True, slots=True)
class ValueMatch:
    """One header or query parameter condition; exactly one of `equals`, `present`, `regex`.

    A header may arrive on several field lines: the condition holds if any line does (each
    line whole, not split at commas, as HAProxy's `req.fhdr`). Same for a repeated query
    parameter."""

    name: str  # header names lower-case; query names as written
    equals: str | None = None
    present: bool | None = None
    regex: re.Pattern[str] | None = None


@dataclass(frozen=True, slots=True)
class HeaderOps:
    """`remove` every field with these names, then `set` (replace all with one), then `add`
    (append, keeping what is there). Names are lower-case; values are ready to send."""

    remove: tuple[bytes, ...] = ()
    set: tuple[tuple[bytes, bytes], ...] = ()
    add: tuple[tuple[bytes, bytes], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.remove or self.set or self.add)


@dataclass(frozen=True, slots=True)
class Forward:
    pool: str


@dataclass(frozen=True, slots=True)
class Redirect:
    """`to` as written, and parsed into (literal, placeholder or None) pieces, so expanding it
    is concatenation: no `str.format`, whose `{host.__class__}` would reach into objects."""

    status: int
    to: str
    pieces: tuple[tuple[str, str | None], ...]


@dataclass(frozen=True, slots=True)
class Respond:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"


Action = Forward | Redirect | Respond


@dataclass(frozen=True, slots=True)
class HttpRoute:
    """One validated route. Conditions left at their defaults do not constrain; `name`
    labels logs, stats and `l4lb route` output (default `route[i]`)."""

    name: str
    action: Action
    hosts: tuple[str, ...] = ()  # lower-case; "*.suffix" for wildcards
    path_prefix: str | None = None
    path: str | None = None
    path_regex: re.Pattern[str] | None = None
    methods: tuple[str, ...] = ()
    headers: tuple[ValueMatch, ...] = ()
    query: tuple[ValueMatch, ...] = ()
    strip_prefix: str | None = None
    replace_prefix: str | None = None
    request_headers: HeaderOps = HeaderOps()
    response_headers: HeaderOps = HeaderOps()
    security: RouteSecurity | None = None  # access rules and rate limits (l7.guard)
    compress: Any = None  # l7.compress.CompressConfig; None: the listener's
    cache: str = ""  # the [cache.NAME] this route's responses are stored in
    jwt: JwtConfig | None = None  # the JWT stage's provider (l7.jwtconf)
    waf: Any = None  # l7.waf.config.WafConfig; None: the listener's

    @property
    def is_default(self) -> bool:
        """No conditions: takes every request that reaches it."""
        return not (
            self.hosts
            or self.path_prefix is not None
            or self.path is not None
            or self.path_regex is not None
            or self.methods
            or self.headers
            or self.query
        )


def referenced_pools(routes: tuple[HttpRoute, ...]) -> tuple[tuple[int, str], ...]:
    """(route index, pool name) of every forwarding route, for the loader's cross-check: the
    key path of a reference is `[*listener_parts, "routes", index, "pool"]`."""
    return tuple(
        (i, route.action.pool)
        for i, route in enumerate(routes)
        if isinstance(route.action, Forward)
    )


# --- value converters: raise BadValue, which _Loader.table reports at the key ---


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


# --- parsing ---


def parse_routes(loader: _Loader, value: Any, parts: Path_) -> tuple[HttpRoute, ...] | None:
    """Validate the `[[listener.NAME.routes]]` list at key path `parts` (the listener's path
    plus "routes"). Every problem is reported through `loader.error`; None if there was any.
    Pool names are not checked against the declared pools: `referenced_pools` lists them."""
    if not isinstance(value, list | tuple):
        loader.error(parts, "expected a list of routes", "[[" + format_path(parts) + "]] tables")
        return None
    before = len(loader.errors)
    routes = [_route(loader, item, [*parts, i], i) for i, item in enumerate(value)]
    good = [r for r in routes if r is not None]
    if len(good) == len(routes):
        _check_order(loader, good, parts)
    return tuple(good) if len(loader.errors) == before else None


def _route(loader: _Loader, item: Any, here: Path_, index: int) -> HttpRoute | None:
    raw = loader.table(item, here, _ROUTE)
    if not isinstance(item, dict):
        return None
    before = len(loader.errors)  # the nested tables report even when a sibling key was wrong
    headers = _matches(loader, item.get("headers", []), [*here, "headers"], _HEADER_MATCH)
    query = _matches(loader, item.get("query", []), [*here, "query"], _QUERY_MATCH)
    action = _action(loader, item, here)
    request_ops = _header_ops(loader, item.get("request_headers"), [*here, "request_headers"])
    response_ops = _header_ops(loader, item.get("response_headers"), [*here, "response_headers"])
    security = parse_security(loader, item, here)
    jwt = parse_route_jwt(loader, item, here, index)  # the JWT stage (l7/jwtconf.py)
    check_route(loader, security, item, here)
    compress = None
    if item.get("compress") is not None:
        from l7.stageconf import parse_compress

        compress = parse_compress(loader, item["compress"], [*here, "compress"])
    waf = None
    if item.get("waf") is not None:  # the WAF stage (l7/waf/)
        from l7.waf.config import parse_waf

        waf = parse_waf(loader, item["waf"], [*here, "waf"])
    if raw is None or action is None or len(loader.errors) != before:
        return None
    if (compress is not None or raw["cache"]) and not isinstance(action, Forward):
        key = "cache" if raw["cache"] else "compress"
        loader.error([*here, key], f"{key} needs pool: only forwarded responses", 'pool = "NAME"')
        return None
    _exclusive(loader, raw, here, PATH_KINDS, "path")
    _exclusive(loader, raw, here, ("strip_prefix", "replace_prefix"), "rewrite")
    if len(loader.errors) == before:
        _check_rewrites(loader, raw, here, action)
    if len(loader.errors) != before:
        return None
    return HttpRoute(
        name=raw["name"] or f"route[{index}]",
        action=action,
        hosts=raw["host"],
        path_prefix=raw["path_prefix"],
        path=raw["path"],
        path_regex=raw["path_regex"],
        methods=raw["methods"],
        headers=headers or (),
        query=query or (),
        strip_prefix=raw["strip_prefix"],
        replace_prefix=raw["replace_prefix"],
        request_headers=request_ops or HeaderOps(),
        response_headers=response_ops or HeaderOps(),
        security=security,
        compress=compress,
        cache=raw["cache"],
        jwt=jwt,
        waf=waf,
    )


def _exclusive(
    loader: _Loader, raw: dict[str, Any], here: Path_, keys: tuple[str, ...], what: str
) -> None:
    given = [k for k in keys if raw[k] is not None]
    if len(given) > 1:
        loader.error(
            [*here, given[1]],
            f"{given[0]} and {given[1]} cannot be used together: a route has one {what}",
            "one of " + ", ".join(keys),
        )


def _action(loader: _Loader, item: dict[str, Any], here: Path_) -> Action | None:
    given = [k for k in ACTIONS if k in item]
    if not given:
        loader.error(
            here,
            "a route needs an action",
            'pool = "NAME", redirect = {status, to} or respond = {status, body}',
        )
        return None
    if len(given) > 1:
        loader.error(
            [*here, given[1]],
            f"a route has one action, this one has {given[0]} and {given[1]}",
            "one of " + ", ".join(ACTIONS),
        )
        return None
    kind = given[0]
    if kind == "pool":
        return Forward(item["pool"]) if isinstance(item["pool"], str) else None
    if kind == "redirect":
        raw = loader.table(item[kind], [*here, kind], _REDIRECT)
        return Redirect(raw["status"], item[kind]["to"], raw["to"]) if raw else None
    raw = loader.table(item[kind], [*here, kind], _RESPOND)
    if raw is None:
        return None
    body = raw["body"].encode()
    if body and (raw["status"] in (204, 304)):
        loader.error(
            [*here, kind, "body"],
            f"a {raw['status']} response has no body (RFC 9110 §15.3.5, §15.4.5)",
            'body = ""',
        )
        return None
    return Respond(raw["status"], body, raw["content_type"])


def _check_rewrites(loader: _Loader, raw: dict[str, Any], here: Path_, action: Action) -> None:
    """Rewrites and request header operations change what is forwarded: only `pool` routes
    forward. `replace_prefix` replaces the matched `path_prefix` (Envoy's `prefix_rewrite`
    has the same rule), and a `strip_prefix` that the matched path cannot start with would
    silently never apply."""
    if not isinstance(action, Forward):
        kind = "redirect" if isinstance(action, Redirect) else "respond"
        for key in ("strip_prefix", "replace_prefix", "request_headers"):
            if raw[key] is not None:
                loader.error(
                    [*here, key],
                    f"{key} needs pool: a {kind} route does not forward the request",
                    'pool = "NAME"',
                )
        return
    if raw["replace_prefix"] is not None and raw["path_prefix"] is None:
        loader.error(
            [*here, "replace_prefix"],
            "replace_prefix replaces the matched path_prefix, and this route has none",
            "path_prefix beside it, or strip_prefix",
        )
    strip = raw["strip_prefix"]
    for key in ("path_prefix", "path"):
        if strip is not None and raw[key] is not None and not raw[key].startswith(strip):
            loader.error(
                [*here, "strip_prefix"],
                f"strip_prefix {strip!r} is not a prefix of {key} {raw[key]!r}: "
                "it would never apply",
                f"a prefix of {raw[key]!r}",
            )


def _matches(
    loader: _Loader, value: Any, parts: Path_, fields: Fields
) -> tuple[ValueMatch, ...] | None:
    example = '{name = "x-env", equals = "canary"}'
    if not isinstance(value, list | tuple):
        loader.error(parts, f"expected a list of conditions, got {value!r}", f"[{example}, ...]")
        return None
    out = []
    for i, item in enumerate(value):
        raw = loader.table(item, [*parts, i], fields)
        if raw is None:
            continue
        given = [k for k in ("equals", "present", "regex") if raw[k] is not None]
        if len(given) != 1:
            loader.error(
                [*parts, i],
                f"{raw['name']!r}: give one of equals, present, regex"
                + (f", not {' and '.join(given)}" if given else ""),
                example,
            )
            continue
        out.append(ValueMatch(raw["name"], raw["equals"], raw["present"], raw["regex"]))
    return tuple(out) if len(out) == len(value) else None


def _header_ops(loader: _Loader, value: Any, parts: Path_) -> HeaderOps | None:
    """`{add = {"x-a" = "1"}, set = {...}, remove = ["x-b"]}`; add and set values may be
    lists (several field lines). A name may appear in one operation only: remove-then-add of
    one name is `set` said twice, and the intent is then unclear."""
    if value is None:
        return HeaderOps()
    raw = loader.table(value, parts, _HEADER_OPS)
    if raw is None:
        return None
    before = len(loader.errors)
    request_side = parts[-1] == "request_headers"
    seen: dict[str, str] = {}
    remove: list[bytes] = []
    if raw["remove"] is not None:
        here = [*parts, "remove"]
        if not isinstance(raw["remove"], list):
            loader.error(here, f"expected a list of names, got {raw['remove']!r}", '["x-name"]')
        else:
            for i, item in enumerate(raw["remove"]):
                name = _op_name(loader, [*here, i], item, "remove", request_side, seen)
                if name is not None:
                    remove.append(name.encode())
    pairs: dict[str, list[tuple[bytes, bytes]]] = {"set": [], "add": []}
    for op, out in pairs.items():
        if raw[op] is None:
            continue
        here = [*parts, op]
        if not isinstance(raw[op], dict):
            loader.error(here, f"expected a table, got {raw[op]!r}", '{"x-name" = "value"}')
            continue
        for key, given in raw[op].items():
            name = _op_name(loader, [*here, key], key, op, request_side, seen)
            try:
                values = [_field_value(v) for v in (given if isinstance(given, list) else [given])]
            except BadValue as exc:
                loader.error([*here, key], exc.message, exc.allowed)
                continue
            if name is not None:
                out.extend((name.encode(), v.encode()) for v in values)
    if len(loader.errors) != before:
        return None
    return HeaderOps(tuple(remove), tuple(pairs["set"]), tuple(pairs["add"]))


_DONE = {"remove": "removed", "set": "set", "add": "added"}


def _op_name(
    loader: _Loader, where: Path_, value: Any, op: str, request_side: bool, seen: dict[str, str]
) -> str | None:
    try:
        name = _field_name(value)
    except BadValue as exc:
        loader.error(where, exc.message, exc.allowed)
        return None
    if name in _UNTOUCHABLE:
        loader.error(
            where,
            f"{name!r} cannot be {_DONE[op]} by a route: it frames the message or belongs to "
            "one connection",
            "end-to-end header names",
        )
        return None
    if request_side and name == "host" and op != "set":
        loader.error(where, f"'host' cannot be {_DONE[op]}: a request has exactly one", "set")
        return None
    if name in seen:
        loader.error(
            where, f"{name!r} is already in {seen[name]}", "each name in one of remove, set, add"
        )
        return None
    seen[name] = op
    return name


def _check_order(loader: _Loader, routes: list[HttpRoute], parts: Path_) -> None:
    """A route after a default (no conditions) can never match: say so rather than let an
    operator wonder why it is never used. Names label logs and stats, so they are unique."""
    names: dict[str, int] = {}
    default: int | None = None
    for i, route in enumerate(routes):
        if route.name in names:
            loader.error(
                [*parts, i, "name"],
                f"route name {route.name!r} is already used by routes[{names[route.name]}]",
                "a name unique within the listener",
            )
        names.setdefault(route.name, i)
        if default is not None:
            loader.error(
                [*parts, i],
                f"route {route.name!r} can never match: routes[{default}] before it has no "
                "conditions and takes every request",
                "the default route last",
            )
            return
        if route.is_default:
            default = i
