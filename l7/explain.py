"""Explain routing decisions in words, for `l4lb route FILE METHOD URL [-H 'Name: value']`.

An operator asking "why did this request go there?" wants what nginx and HAProxy make them
reconstruct from logs: each route tried, the condition that failed, and what the matching
route does. The decision itself is `Router.match`'s, so the explanation shows what would
really happen; the reasons use the same predicates (l7.router) the router is built from.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import urlsplit

from l4lb.errors import L4lbError, RemoteProtocolError
from l7.model import Request
from l7.router import (
    Match,
    Router,
    header_matches,
    host_key,
    host_matches,
    query_matches,
    render_redirect,
)
from l7.routes import Forward, HeaderOps, HttpRoute, Redirect, ValueMatch
from l7.target import origin_form, with_host

__all__ = ["explain", "header_arg", "request_from_url", "why_not"]

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def header_arg(text: str) -> tuple[str, str]:
    """`"X-Env: canary"` (curl's `-H` spelling) -> `("X-Env", "canary")`."""
    name, sep, value = text.partition(":")
    if not sep or not _TOKEN.match(name.strip()):
        raise L4lbError(f"{text!r} is not a header: write 'Name: value'")
    return name.strip(), value.strip()


def request_from_url(
    method: str,
    url: str,
    headers: Sequence[tuple[str, str]] = (),
    scheme: str = "http",
    absolute_form: bool = False,
) -> Request:
    """The request a client would send for an absolute `http://host:port/path?query` URL, or
    for a path (`/path?query`, the request line's own form) with a Host in `headers`; then
    `scheme` is the listener's. A Host given in `headers` wins over the URL's, as with curl's
    `-H 'Host: ...'`; with `absolute_form` the URL is the request-target itself (`GET
    http://host/path HTTP/1.1`, as sent to a forward proxy), and its authority wins over any
    Host, as in l4lb (l7.target)."""
    fields = []
    for name, value in headers:
        if not _TOKEN.match(name):
            raise L4lbError(f"{name!r} is not a header name")
        fields.append((name.lower().encode(), value.encode()))
    given = [v for k, v in fields if k == b"host"]
    if url.startswith("/"):
        if not given:
            raise L4lbError(f"{url!r} has no host: add -H 'Host: NAME', or give a full URL")
        if absolute_form:
            raise L4lbError("--absolute-form needs a full URL such as http://example.com/path")
        parts = urlsplit(url)
        authority = ""
    else:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise L4lbError(
                f"{url!r} is not an absolute URL such as http://example.com/path, "
                "or a path such as /path with -H 'Host: NAME'"
            )
        scheme = parts.scheme
        authority = parts.netloc.rpartition("@")[2]
    if not given:
        fields.insert(0, (b"host", authority.encode()))
    host = given[0].decode() if given else authority
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if absolute_form:
        try:
            raw, target = origin_form(method, url)
        except RemoteProtocolError as exc:
            raise L4lbError(f"l4lb answers 400 to the request-target {url!r}: {exc}") from None
        fields = with_host(fields, raw)
        host = raw.decode("latin-1")
    return Request(method, target, fields, host=host_key(host), scheme=scheme)


def explain(
    routes: Sequence[HttpRoute],
    method: str,
    url: str,
    headers: Sequence[tuple[str, str]] = (),
    scheme: str = "http",
    absolute_form: bool = False,
) -> str:
    """Several lines: the request as routed, each route tried with why it did not match, then
    the matching route and what it does, or `no route matched: 404`. Raises `L4lbError` for
    a URL or header that a client could not send. `scheme` is the listener's (used when
    `url` is a path)."""
    request = request_from_url(method, url, headers, scheme, absolute_form)
    match = Router(routes).match(request)
    query = f" query {request.query!r}" if request.query else ""
    lines = [f"request: {request.method} host {request.host!r} path {request.path!r}{query}"]
    for i, route in enumerate(routes):
        label = route.name if route.name == f"route[{i}]" else f"route[{i}] {route.name!r}"
        if match is not None and route is match.route:
            lines.append(f"{label}: matched")
            lines.extend("  " + line for line in _effects(match, request))
            return "\n".join(lines)
        reasons = why_not(route, request)
        lines.append(f"{label}: " + ("; ".join(reasons) or "matches, but was not taken (a bug)"))
    lines.append("no route matched: 404")
    return "\n".join(lines)


def why_not(route: HttpRoute, request: Request) -> list[str]:
    """Every condition of `route` that `request` fails, in words; empty if it matches."""
    out = []
    host, path = request.host, request.path
    if route.hosts and not any(host_matches(p, host) for p in route.hosts):
        wanted = " or ".join(route.hosts)
        out.append(f"host {host!r} is not {wanted}" if host else f"no host (wants {wanted})")
    if route.methods and request.method not in route.methods:
        out.append(f"method {request.method!r} is not {' or '.join(route.methods)}")
    if route.path_prefix is not None and not path.startswith(route.path_prefix):
        out.append(f"path {path!r} does not start with {route.path_prefix}")
    if route.path is not None and path != route.path:
        out.append(f"path {path!r} is not {route.path}")
    if route.path_regex is not None and route.path_regex.fullmatch(path) is None:
        out.append(f"path {path!r} does not match {route.path_regex.pattern}")
    for cond in route.headers:
        if not header_matches(cond, request.headers):
            key = cond.name.encode()
            values = [v.decode("utf-8", "replace") for k, v in request.headers if k == key]
            out.append(_miss("header", cond, values))
    params = request.params() if route.query else {}
    for cond in route.query:
        if not query_matches(cond, params):
            out.append(_miss("query parameter", cond, params.get(cond.name, [])))
    return out


def _miss(kind: str, cond: ValueMatch, values: list[str]) -> str:
    if cond.present is not None:
        return f"{kind} {cond.name} is present" if values else f"no {kind} {cond.name}"
    wanted = repr(cond.equals) if cond.equals is not None else f"a match for {_pattern(cond)}"
    if not values:
        return f"no {kind} {cond.name} (wants {wanted})"
    shown = " and ".join(map(repr, values))
    if cond.equals is not None:
        return f"{kind} {cond.name} is {shown}, not {wanted}"
    return f"{kind} {cond.name} {shown} does not match {_pattern(cond)}"


def _pattern(cond: ValueMatch) -> str:
    return cond.regex.pattern if cond.regex is not None else ""


def _effects(match: Match, request: Request) -> list[str]:
    route, action = match.route, match.route.action
    if isinstance(action, Forward):
        rewritten = f" with path rewritten to {match.path}" if match.path is not None else ""
        lines = [f"forward to pool {action.pool!r}{rewritten}"]
        lines += _ops("request headers", route.request_headers)
    elif isinstance(action, Redirect):
        status, location = render_redirect(route, request)
        lines = [f"redirect {status} to {location}"]
    else:
        body = f" with {len(action.body)} bytes of {action.content_type}" if action.body else ""
        lines = [f"respond {action.status}{body}"]
    return lines + _ops("response headers", route.response_headers)


def _ops(what: str, ops: HeaderOps) -> list[str]:
    if not ops:
        return []
    done = [f"remove {name.decode()}" for name in ops.remove]
    done += [f"set {name.decode()}: {value.decode()}" for name, value in ops.set]
    done += [f"add {name.decode()}: {value.decode()}" for name, value in ops.add]
    return [f"{what}: " + "; ".join(done)]
