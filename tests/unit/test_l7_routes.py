"""HTTP route config: good tables become typed routes; every mistake names path, line, allowed."""

from __future__ import annotations

import re
import tomllib

import pytest

from l4lb.config.lines import LineMap
from l4lb.config.load import _Loader
from l7.routeconf import parse_routes
from l7.routes import (
    Forward,
    HeaderOps,
    Redirect,
    Respond,
    ValueMatch,
    referenced_pools,
)

HEAD = '[listener.web]\nbind = ":80"\nprotocol = "http"\n'  # routes start on line 4


def load(routes: str):
    """Parse `[[listener.web.routes]]` tables the way the config loader will."""
    text = HEAD + routes
    loader = _Loader("site.toml", LineMap(text))
    value = tomllib.loads(text)["listener"]["web"].get("routes", [])
    result = parse_routes(loader, value, ["listener", "web", "routes"])
    assert (result is None) == bool(loader.errors)
    return result, [str(e) for e in loader.errors]


def errors(routes: str) -> list[str]:
    result, errs = load(routes)
    assert result is None
    return errs


GOOD = """
[[listener.web.routes]]
name = "api"
host = ["API.example.com", "*.api.example.com."]
path_prefix = "/api/"
strip_prefix = "/api"
methods = ["GET", "HEAD", "GET"]
headers = [{name = "X-Env", equals = "canary"}, {name = "authorization", present = true}]
query = [{name = "v", regex = "[0-9]+"}]
pool = "api"
request_headers = {add = {"X-A" = ["1", "2"]}, set = {host = "internal"}, remove = ["X-B"]}
response_headers = {set = {"cache-control" = "no-store"}}

[[listener.web.routes]]
path = "/old"
redirect = {to = "https://{host}{target}"}

[[listener.web.routes]]
path_regex = "/v[0-9]+/.*"
pool = "versioned"

[[listener.web.routes]]
respond = {status = 403, body = "no"}
"""


def test_good_routes_become_typed_values():
    routes, errs = load(GOOD)
    assert errs == []
    assert routes is not None
    api, old, versioned, default = routes
    assert api.name == "api" and old.name == "route[1]" and default.name == "route[3]"
    assert api.hosts == ("api.example.com", "*.api.example.com")
    assert api.methods == ("GET", "HEAD")
    assert api.headers == (
        ValueMatch("x-env", equals="canary"),
        ValueMatch("authorization", present=True),
    )
    assert api.query[0].regex is not None and api.query[0].regex.pattern == "[0-9]+"
    assert api.action == Forward("api") and api.strip_prefix == "/api"
    assert api.request_headers == HeaderOps(
        remove=(b"x-b",), set=((b"host", b"internal"),), add=((b"x-a", b"1"), (b"x-a", b"2"))
    )
    assert api.response_headers == HeaderOps(set=((b"cache-control", b"no-store"),))
    assert old.action == Redirect(
        302, "https://{host}{target}", (("https://", "host"), ("", "target"))
    )
    assert isinstance(versioned.path_regex, re.Pattern)
    assert default.action == Respond(403, b"no", "text/plain; charset=utf-8")
    assert default.is_default and not api.is_default
    assert referenced_pools(routes) == ((0, "api"), (2, "versioned"))


def test_no_routes_is_an_empty_tuple():
    assert load("") == ((), [])


ALLOWED_KEYS = (
    "name, host, path_prefix, path, path_regex, methods, headers, query, pool, redirect, "
    "respond, strip_prefix, replace_prefix, request_headers, response_headers, access, rate_limits,"
    " compress, cache, jwt, waf"
)


@pytest.mark.parametrize(
    ("routes", "expected"),
    [
        (
            '[[listener.web.routes]]\npath_prefx = "/a"\npool = "p"',
            "site.toml:5: listener.web.routes[0].path_prefx: unknown key 'path_prefx'; "
            f"did you mean 'path_prefix'? (allowed: {ALLOWED_KEYS})",
        ),
        (
            '[[listener.web.routes]]\npath_regex = "/a(b"\npool = "p"',
            "site.toml:5: listener.web.routes[0].path_regex: '/a(b' is not a valid regex: "
            "missing ), unterminated subpattern at position 2 "
            "(allowed: a Python regular expression, matched against the whole value)",
        ),
        (
            '[[listener.web.routes]]\npool = "p"\nrespond = {status = 404}',
            "site.toml:6: listener.web.routes[0].respond: a route has one action, "
            "this one has pool and respond (allowed: one of pool, redirect, respond)",
        ),
        (
            '[[listener.web.routes]]\npath = "/a"',
            "site.toml:4: listener.web.routes[0]: a route needs an action "
            '(allowed: pool = "NAME", redirect = {status, to} or respond = {status, body})',
        ),
        (
            '[[listener.web.routes]]\nredirect = {status = 200, to = "/"}',
            "site.toml:5: listener.web.routes[0].redirect.status: 200 is not a redirect status "
            "(allowed: 301, 302, 303, 307, 308)",
        ),
        (
            "[[listener.web.routes]]\nrespond = {status = 101}",
            "site.toml:5: listener.web.routes[0].respond.status: 101 is out of range "
            "(allowed: 200 to 599)",
        ),
        (
            '[[listener.web.routes]]\npath = "/a"\nreplace_prefix = "/b"\npool = "p"',
            "site.toml:6: listener.web.routes[0].replace_prefix: replace_prefix replaces the "
            "matched path_prefix, and this route has none "
            "(allowed: path_prefix beside it, or strip_prefix)",
        ),
        (
            '[[listener.web.routes]]\nredirect = {to = "https://{hots}{path}"}',
            "site.toml:5: listener.web.routes[0].redirect.to: unknown placeholder '{hots}'; "
            "did you mean '{host}'? (allowed: {scheme}, {host}, {path}, {query}, {target}; "
            "{{ and }} for braces)",
        ),
        (
            '[[listener.web.routes]]\nredirect = {to = "https://{host.__class__}"}',
            "site.toml:5: listener.web.routes[0].redirect.to: unknown placeholder "
            "'{host.__class__}' (allowed: {scheme}, {host}, {path}, {query}, {target}; "
            "{{ and }} for braces)",
        ),
        (
            '[[listener.web.routes]]\nredirect = {to = "https://{host"}',
            "site.toml:5: listener.web.routes[0].redirect.to: 'https://{host' is not a valid "
            "target: expected '}' before end of string (allowed: {scheme}, {host}, {path}, "
            "{query}, {target}; {{ and }} for braces)",
        ),
        (
            '[[listener.web.routes]]\nredirect = {to = "https://{host}/a b"}',
            "site.toml:5: listener.web.routes[0].redirect.to: 'https://{host}/a b' is empty or "
            "has spaces, control or non-ASCII characters (allowed: {scheme}, {host}, {path}, "
            "{query}, {target}; {{ and }} for braces; percent-encode anything else)",
        ),
        (
            '[[listener.web.routes]]\npath_prefix = "/a"\npath = "/a"\npool = "p"',
            "site.toml:6: listener.web.routes[0].path: path_prefix and path cannot be used "
            "together: a route has one path (allowed: one of path_prefix, path, path_regex)",
        ),
        (
            '[[listener.web.routes]]\npath_prefix = "api"\npool = "p"',
            "site.toml:5: listener.web.routes[0].path_prefix: 'api' does not start with '/' "
            '(allowed: a path such as "/api/")',
        ),
        (
            '[[listener.web.routes]]\npath = "/a?b=1"\npool = "p"',
            "site.toml:5: listener.web.routes[0].path: '/a?b=1' contains '?': paths are "
            'matched without the query (allowed: a path, and query = [{name = "...", '
            'equals = "..."}] for the query)',
        ),
        (
            '[[listener.web.routes]]\nmethods = ["get"]\npool = "p"',
            "site.toml:5: listener.web.routes[0].methods: 'get' is not 'GET': methods are "
            'case-sensitive (RFC 9110 §9.1) (allowed: method names such as "GET", "HEAD", '
            '"POST")',
        ),
        (
            '[[listener.web.routes]]\nhost = "example.com:8080"\npool = "p"',
            "site.toml:5: listener.web.routes[0].host: 'example.com:8080' is not a host name "
            '(allowed: host names such as "api.example.com" or "*.example.com")',
        ),
        (
            '[[listener.web.routes]]\npath = "/a"\nstrip_prefix = "/a"\nrespond = {status = 404}',
            "site.toml:6: listener.web.routes[0].strip_prefix: strip_prefix needs pool: a "
            'respond route does not forward the request (allowed: pool = "NAME")',
        ),
        (
            '[[listener.web.routes]]\npath_prefix = "/api"\nstrip_prefix = "/v1"\npool = "p"',
            "site.toml:6: listener.web.routes[0].strip_prefix: strip_prefix '/v1' is not a "
            "prefix of path_prefix '/api': it would never apply (allowed: a prefix of '/api')",
        ),
        (
            '[[listener.web.routes]]\npath = "/a"\nstrip_prefix = "/a"\nreplace_prefix = "/b"\n'
            'pool = "p"',
            "site.toml:7: listener.web.routes[0].replace_prefix: strip_prefix and "
            "replace_prefix cannot be used together: a route has one rewrite "
            "(allowed: one of strip_prefix, replace_prefix)",
        ),
        (
            '[[listener.web.routes]]\nrespond = {status = 204, body = "x"}',
            "site.toml:5: listener.web.routes[0].respond.body: a 204 response has no body "
            '(RFC 9110 §15.3.5, §15.4.5) (allowed: body = "")',
        ),
        (
            '[listener.web.routes]\npool = "p"',
            "site.toml:4: listener.web.routes: expected a list of routes "
            "(allowed: [[listener.web.routes]] tables)",
        ),
    ],
    ids=lambda v: v.split("\n")[1][:30] if v.startswith("[") else None,
)
def test_config_error(routes: str, expected: str):
    assert errors(routes) == [expected]


def test_condition_needs_exactly_one_test():
    routes = """
[[listener.web.routes]]
headers = [
  {name = "x-a", equals = "1", present = true},
  {name = "x-b"},
  {nmae = "x-c", present = true},
]
pool = "p"
"""
    assert errors(routes) == [
        "site.toml:7: listener.web.routes[0].headers[0]: 'x-a': give one of equals, present, "
        "regex, not equals and present "
        '(allowed: {name = "x-env", equals = "canary"})',
        "site.toml:8: listener.web.routes[0].headers[1]: 'x-b': give one of equals, present, "
        'regex (allowed: {name = "x-env", equals = "canary"})',
        "site.toml:9: listener.web.routes[0].headers[2].nmae: unknown key 'nmae'; "
        "did you mean 'name'? (allowed: name, equals, present, regex)",
        "site.toml:9: listener.web.routes[0].headers[2].name: missing required key 'name'",
    ]


def test_query_regex_error_points_at_the_query_line():
    routes = '[[listener.web.routes]]\npool = "p"\nquery = [{name = "v", regex = "*"}]'
    assert errors(routes) == [
        "site.toml:6: listener.web.routes[0].query[0].regex: '*' is not a valid regex: "
        "nothing to repeat at position 0 "
        "(allowed: a Python regular expression, matched against the whole value)"
    ]


def test_header_operations_errors():
    routes = """
[[listener.web.routes]]
pool = "p"
request_headers = {add = {"content-length" = "1", host = "h"}, remove = ["x a"], sett = {}}
response_headers = {set = {"x-a" = "1\\n2"}, remove = ["x-b", "X-A"]}
"""
    assert errors(routes) == [
        "site.toml:7: listener.web.routes[0].request_headers.sett: unknown key 'sett'; "
        "did you mean 'set'? (allowed: add, set, remove)",
        "site.toml:8: listener.web.routes[0].response_headers.set.x-a: 'x-a' is already in "
        "remove (allowed: each name in one of remove, set, add)",
        "site.toml:8: listener.web.routes[0].response_headers.set.x-a: '1\\n2' contains a "
        "control character (allowed: printable text)",
    ]
    routes = routes.replace(", sett = {}", "")
    assert errors(routes) == [
        "site.toml:7: listener.web.routes[0].request_headers.remove[0]: 'x a' is not a header "
        "name (allowed: letters, digits and !#$%&'*+.^_`|~-)",
        "site.toml:7: listener.web.routes[0].request_headers.add.content-length: "
        "'content-length' cannot be added by a route: it frames the message or belongs to one "
        "connection (allowed: end-to-end header names)",
        "site.toml:7: listener.web.routes[0].request_headers.add.host: 'host' cannot be added: "
        "a request has exactly one (allowed: set)",
        "site.toml:8: listener.web.routes[0].response_headers.set.x-a: 'x-a' is already in "
        "remove (allowed: each name in one of remove, set, add)",
        "site.toml:8: listener.web.routes[0].response_headers.set.x-a: '1\\n2' contains a "
        "control character (allowed: printable text)",
    ]


def test_every_route_is_checked_in_one_pass():
    routes = """
[[listener.web.routes]]
pool = "p"
path_regex = "("

[[listener.web.routes]]
name = "b"
redirect = {status = 301}
"""
    assert errors(routes) == [
        "site.toml:7: listener.web.routes[0].path_regex: '(' is not a valid regex: missing ), "
        "unterminated subpattern at position 0 "
        "(allowed: a Python regular expression, matched against the whole value)",
        "site.toml:11: listener.web.routes[1].redirect.to: missing required key 'to'",
    ]


def test_routes_after_the_default_can_never_match():
    routes = """
[[listener.web.routes]]
name = "all"
pool = "p"

[[listener.web.routes]]
name = "api"
path_prefix = "/api"
pool = "api"
"""
    assert errors(routes) == [
        "site.toml:9: listener.web.routes[1]: route 'api' can never match: routes[0] before it "
        "has no conditions and takes every request (allowed: the default route last)"
    ]


def test_route_names_are_unique():
    routes = """
[[listener.web.routes]]
name = "a"
path = "/x"
pool = "p"

[[listener.web.routes]]
name = "a"
pool = "p"
"""
    assert errors(routes) == [
        "site.toml:11: listener.web.routes[1].name: route name 'a' is already used by "
        "routes[0] (allowed: a name unique within the listener)"
    ]
