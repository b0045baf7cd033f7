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
This module holds the validated route values; `l7.routeconf` reads them from TOML and
checks them, `l7.router` matches. Both are loaded by `l4lb.config.load` only for
`http`/`https` listeners (DESIGN.md: `l4lb` does not import `l7` at import time).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from l7.guard import RouteSecurity
from l7.jwtconf import JwtConfig

__all__ = [
    "PLACEHOLDERS",
    "Forward",
    "HeaderOps",
    "HttpRoute",
    "Redirect",
    "Respond",
    "ValueMatch",
    "referenced_pools",
]

#: What a redirect target may contain. `target` is `path` plus `?query` when there is one.
PLACEHOLDERS: Final = ("scheme", "host", "path", "query", "target")
REDIRECT_STATUSES: Final = (301, 302, 303, 307, 308)
ACTIONS: Final = ("pool", "redirect", "respond")
PATH_KINDS: Final = ("path_prefix", "path", "path_regex")


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
