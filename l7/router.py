"""Pick the route for an HTTP request: sans-IO, no clock, built once per config.

`Router.match` runs for every request, so the work is done in `__init__`: each exact host
named by a route maps (in a dict) to the routes that can take it, in config order: those
naming it, the wildcards covering it and the routes without a host condition. A request for
an exact host is one dict lookup and then, per candidate, a few attribute tests (a set
lookup for the method, `str.startswith` for a path prefix); regexes run only for routes that
have them, query strings are parsed only for routes with query conditions, and a match with
no rewrite returns a `Match` made in advance. Hosts the config does not name try each parent
suffix against the wildcards (as nginx's `server_name` hash for `*.example.com`).

The request's `host` is expected lower-case without port (l7.model); anything else (a port,
upper case, a trailing dot) is normalised on the slow path, so `Host: API.example.com:8080`
still routes. No route matching is not an error here: the pipeline answers 404.

Matching semantics are documented in l7.routes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote

from l7.model import Headers, Request
from l7.routes import Forward, HeaderOps, HttpRoute, Redirect, ValueMatch

__all__ = [
    "Match",
    "Router",
    "apply_request_headers",
    "apply_response_headers",
    "header_matches",
    "host_key",
    "host_matches",
    "query_matches",
    "render_redirect",
    "rewrite_path",
]


@dataclass(frozen=True, slots=True)
class Match:
    """The route taken and, when it rewrites the path, the new path and request-target (the
    new path plus the original `?query`); both None when the request goes on unchanged."""

    route: HttpRoute
    path: str | None = None
    target: str | None = None


# --- predicates, shared with l7.explain so that the explanation cannot disagree ---


def host_key(host: str) -> str:
    """`API.Example.com.:8080` -> `api.example.com`; `[::1]:80` -> `[::1]`. The port is
    ignored for routing, as nginx's `server_name` does (Envoy with `strip_any_host_port`)."""
    host = host.lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end > 0 else host
    name, sep, port = host.rpartition(":")
    if sep and ":" not in name and (not port or port.isdigit()):
        host = name
    return host.rstrip(".")


def host_matches(pattern: str, host: str) -> bool:
    """`*.example.com` matches any depth below example.com, not example.com itself."""
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


def header_matches(cond: ValueMatch, headers: Headers) -> bool:
    key = cond.name.encode()
    values = [v for k, v in headers if k == key]
    if cond.present is not None:
        return bool(values) == cond.present
    if cond.equals is not None:
        return cond.equals.encode() in values
    return any(_fullmatch(cond.regex, _text(v)) for v in values)


def query_matches(cond: ValueMatch, params: dict[str, list[str]]) -> bool:
    values = params.get(cond.name)
    if cond.present is not None:
        return (values is not None) == cond.present
    if values is None:
        return False
    if cond.equals is not None:
        return cond.equals in values
    return any(_fullmatch(cond.regex, v) for v in values)


def rewrite_path(route: HttpRoute, path: str) -> str | None:
    """The forwarded path after `strip_prefix`/`replace_prefix`, or None for no rewrite.

    The result always starts with "/": stripping `/api` from `/api` gives `/`, and from
    `/apix` gives `/x` (Traefik's StripPrefix). `replace_prefix` swaps the matched
    `path_prefix` verbatim, as Envoy's `prefix_rewrite`, slashes included."""
    if route.replace_prefix is not None and route.path_prefix is not None:
        old, new = route.path_prefix, route.replace_prefix
    elif route.strip_prefix is not None:
        old, new = route.strip_prefix, ""
    else:
        return None
    if not path.startswith(old):
        return None
    out = new + path[len(old) :]
    return out if out.startswith("/") else "/" + out


def _fullmatch(regex: re.Pattern[str] | None, text: str) -> bool:
    return regex is not None and regex.fullmatch(text) is not None


def _text(value: bytes) -> str:
    # Lossless: UTF-8 as sent by browsers and curl; other bytes become lone surrogates that
    # no ordinary pattern matches.
    return value.decode("utf-8", "surrogateescape")


# --- the router ---


class _Plan:
    """One route, flattened for the hot loop."""

    __slots__ = (
        "exact",
        "headers",
        "methods",
        "params",
        "prefix",
        "query",
        "regex",
        "rewrites",
        "route",
        "static",
    )

    def __init__(self, route: HttpRoute) -> None:
        self.route = route
        self.methods = frozenset(route.methods) or None
        self.prefix = route.path_prefix
        self.exact = route.path
        self.regex = route.path_regex
        self.headers = tuple(
            (c.name.encode(), None if c.equals is None else c.equals.encode(), c.present, c)
            for c in route.headers
        )
        self.query = route.query or None
        self.rewrites = isinstance(route.action, Forward) and (
            route.strip_prefix is not None or route.replace_prefix is not None
        )
        self.static = Match(route)

    def test(self, request: Request) -> bool:
        if self.methods is not None and request.method not in self.methods:
            return False
        path = request.path
        if self.prefix is not None:
            if not path.startswith(self.prefix):
                return False
        elif self.exact is not None:
            if path != self.exact:
                return False
        elif self.regex is not None and self.regex.fullmatch(path) is None:
            return False
        for key, equals, present, cond in self.headers:
            if not _header_ok(request.headers, key, equals, present, cond):
                return False
        if self.query is not None:
            params = request.params()
            for cond in self.query:
                if not query_matches(cond, params):
                    return False
        return True

    def result(self, request: Request) -> Match:
        if not self.rewrites:
            return self.static
        path = rewrite_path(self.route, request.path)
        if path is None:
            return self.static
        return Match(self.route, path, f"{path}?{request.query}" if request.query else path)


def _header_ok(
    headers: Headers, key: bytes, equals: bytes | None, present: bool | None, cond: ValueMatch
) -> bool:
    """`header_matches` without building a list: stops at the first deciding field line."""
    for name, value in headers:
        if name == key:
            if present is not None:
                return present
            if equals is not None:
                if value == equals:
                    return True
            elif _fullmatch(cond.regex, _text(value)):
                return True
    return present is False


class Router:
    """Routes of one listener, first match wins. Immutable once built: a reload builds a new
    one, and requests in flight keep the one they started with."""

    __slots__ = (
        "_by_host",
        "_exact",
        "_hostless",
        "_hostless_at",
        "_plans",
        "_wild",
        "_wild_plans",
        "routes",
    )

    def __init__(self, routes: Sequence[HttpRoute]) -> None:
        self.routes = tuple(routes)
        self._plans = tuple(_Plan(route) for route in self.routes)
        self._hostless_at = tuple(i for i, r in enumerate(self.routes) if not r.hosts)
        self._hostless = tuple(self._plans[i] for i in self._hostless_at)
        self._wild: dict[str, tuple[int, ...]] = {}  # ".example.com" -> route indices
        exact: dict[str, list[int]] = {}
        for i, route in enumerate(self.routes):
            for pattern in route.hosts:
                if pattern.startswith("*."):
                    self._wild[pattern[1:]] = (*self._wild.get(pattern[1:], ()), i)
                else:
                    exact.setdefault(pattern, []).append(i)
        # One wildcard suffix covering a host is the common case: its candidates are ready.
        self._wild_plans = {sfx: self._ordered(found) for sfx, found in self._wild.items()}
        self._exact = {host: self._candidates(host, found) for host, found in exact.items()}
        self._by_host = bool(exact or self._wild)

    def match(self, request: Request) -> Match | None:
        """The first route whose conditions all hold, or None (the pipeline answers 404)."""
        plans = self._exact.get(request.host)
        if plans is None:
            plans = self._lookup(request.host) if self._by_host else self._hostless
        for plan in plans:
            if plan.test(request):
                return plan.result(request)
        return None

    def _lookup(self, host: str) -> tuple[_Plan, ...]:
        """The slow path: a host with a port or upper case, or one no route names exactly."""
        key = host_key(host)
        plans = self._exact.get(key)
        return plans if plans is not None else self._candidates(key, ())

    def _candidates(self, host: str, exact: Sequence[int]) -> tuple[_Plan, ...]:
        """Routes that can take `host`, in config order: those naming it (`exact`), the
        wildcards covering it and those without a host condition."""
        suffixes = []
        dot = host.find(".", 1)
        while dot > 0:  # ".b.example.com", ".example.com", ".com"
            if host[dot:] in self._wild:
                suffixes.append(host[dot:])
            dot = host.find(".", dot + 1)
        if not exact:
            if not suffixes:
                return self._hostless
            if len(suffixes) == 1:
                return self._wild_plans[suffixes[0]]
        found = set(exact)
        for suffix in suffixes:
            found.update(self._wild[suffix])
        return self._ordered(found)

    def _ordered(self, found: set[int] | Sequence[int]) -> tuple[_Plan, ...]:
        return tuple(self._plans[i] for i in sorted({*found, *self._hostless_at}))


# --- actions ---


def apply_request_headers(route: HttpRoute, headers: Headers) -> Headers:
    """The request headers to forward; `headers` itself when the route changes nothing."""
    return _apply(route.request_headers, headers)


def apply_response_headers(route: HttpRoute, headers: Headers) -> Headers:
    """The response headers to send; `headers` itself when the route changes nothing."""
    return _apply(route.response_headers, headers)


def _apply(ops: HeaderOps, headers: Headers) -> Headers:
    """Remove, then set, then add (Envoy's order). `set` replaces every field line of that
    name with its value(s); `add` appends and keeps the existing ones. Names compare
    case-insensitively (config names are lower-case; incoming ones are lowered here in case
    an adapter did not)."""
    if not ops:
        return headers
    drop = set(ops.remove)
    drop.update(name for name, _ in ops.set)
    out = [(k, v) for k, v in headers if k.lower() not in drop]
    out.extend(ops.set)
    out.extend(ops.add)
    return out


# RFC 3986 characters allowed unescaped in each component; "%" is kept so escapes the client
# sent are not escaped twice. Anything else is percent-encoded, so no value can end its
# component early (a Host of "evil.com/x" stays in the authority) or inject CR/LF.
_SAFE: Final = {
    "scheme": "+.-",
    "path": "/%:@!$&'()*+,;=",
    "query": "/?%:@!$&'()*+,;=",
}


def _host_value(host: str) -> str:
    host = host_key(host)
    return quote(host, safe="[]:" if host.startswith("[") else "")  # ":" only in IPv6 literals


def render_redirect(route: HttpRoute, request: Request) -> tuple[int, str]:
    """(status, Location) for a `redirect` route. Placeholders expand to the request's values,
    percent-encoded for their place in a URL; `{host}` is without port (nginx `$host`). A
    path starting with "//" is collapsed to one "/", so `to = "{path}"` cannot become a
    scheme-relative redirect to another site. Raises TypeError for a non-redirect route."""
    action = route.action
    if not isinstance(action, Redirect):
        raise TypeError(f"route {route.name!r} is not a redirect")
    path = request.path
    if path.startswith("//"):
        path = "/" + path.lstrip("/")
    path = quote(path, safe=_SAFE["path"])
    query = quote(request.query, safe=_SAFE["query"])
    values = {
        "scheme": quote(request.scheme, safe=_SAFE["scheme"]),
        "host": _host_value(request.host),
        "path": path,
        "query": query,
        "target": f"{path}?{query}" if query else path,
    }
    location = "".join(
        literal + (values[field] if field is not None else "") for literal, field in action.pieces
    )
    return action.status, location
