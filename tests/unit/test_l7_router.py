"""HTTP routing: conditions, first match, rewrites, header operations, redirects, responses,
and the `l4lb route` explanation, which must agree with the router on every request."""

from __future__ import annotations

import tomllib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from l4lb.config.lines import LineMap
from l4lb.config.load import _Loader
from l4lb.errors import L4lbError
from l7.explain import explain, header_arg, request_from_url, why_not
from l7.model import Request
from l7.routeconf import parse_routes
from l7.router import Router, apply_request_headers, apply_response_headers, render_redirect
from l7.routes import HttpRoute, Respond


def routes_of(tables: str) -> tuple[HttpRoute, ...]:
    text = '[listener.web]\nbind = ":80"\nprotocol = "http"\n' + tables
    loader = _Loader("site.toml", LineMap(text))
    value = tomllib.loads(text)["listener"]["web"]["routes"]
    routes = parse_routes(loader, value, ["listener", "web", "routes"])
    assert loader.errors == [] and routes is not None
    return routes


SITE = routes_of("""
[[listener.web.routes]]
name = "api-v2"
host = "api.example.com"
path_prefix = "/v2/"
query = [{name = "v", equals = "2"}]
pool = "api2"

[[listener.web.routes]]
name = "api"
host = ["api.example.com", "API.example.org"]
path_prefix = "/api"
strip_prefix = "/api"
pool = "api"

[[listener.web.routes]]
name = "canary"
host = "*.example.com"
headers = [{name = "X-Env", equals = "canary"}, {name = "authorization", present = true}]
pool = "canary"

[[listener.web.routes]]
name = "curl"
headers = [{name = "user-agent", regex = "curl/.*"}]
methods = ["GET", "HEAD"]
pool = "tools"

[[listener.web.routes]]
name = "health"
path = "/healthz"
respond = {status = 200, body = "ok"}

[[listener.web.routes]]
name = "versioned"
path_regex = "/v[0-9]+/items/[0-9]+"
pool = "items"

[[listener.web.routes]]
name = "legacy"
path_prefix = "/old/"
replace_prefix = "/new/"
pool = "web"

[[listener.web.routes]]
name = "debug"
methods = ["POST"]
query = [{name = "debug", present = true}]
respond = {status = 403}

[[listener.web.routes]]
name = "shop"
host = "www.example.com"
path_prefix = "/shop"
headers = [{name = "x-bot", present = false}]
pool = "shop"

[[listener.web.routes]]
name = "default"
pool = "web"
""")

CANARY = [(b"x-env", b"canary"), (b"authorization", b"Bearer t")]
CURL = [(b"user-agent", b"curl/8.5.0")]

# (method, host, target, headers, route taken, rewritten path or None)
CASES = [
    ("GET", "api.example.com", "/v2/x?v=2", [], "api-v2", None),
    ("GET", "api.example.com", "/v2/x?v=1&v=2", [], "api-v2", None),  # any value of v
    ("GET", "api.example.com", "/v2/x?v=3", [], "default", None),
    ("GET", "api.example.com", "/v2/x", [], "default", None),
    ("GET", "www.example.com", "/v2/x?v=2", [], "default", None),  # host is exact
    ("GET", "api.example.com", "/api/users?page=2", [], "api", "/users"),
    ("GET", "api.example.com", "/api", [], "api", "/"),  # at least "/"
    ("GET", "api.example.org", "/apix", [], "api", "/x"),  # plain string prefix
    ("GET", "API.Example.COM:8443", "/api/a", [], "api", "/a"),  # case and port ignored
    ("GET", "api.example.com.", "/api/a", [], "api", "/a"),  # trailing dot
    ("GET", "api.example.com:", "/api/a", [], "api", "/a"),  # empty port
    ("GET", "a.example.com", "/", CANARY, "canary", None),
    ("GET", "a.b.c.example.com", "/", CANARY, "canary", None),  # any depth
    ("GET", "A.Example.Com:80", "/", CANARY, "canary", None),
    ("GET", "example.com", "/", CANARY, "default", None),  # not the bare suffix
    ("GET", "badexample.com", "/", CANARY, "default", None),
    ("GET", "api.example.com", "/", CANARY, "canary", None),  # wildcard after exact names
    ("GET", "a.example.com", "/", [(b"x-env", b"Canary"), CANARY[1]], "default", None),
    ("GET", "a.example.com", "/", CANARY[:1], "default", None),  # all conditions must hold
    ("GET", "a.example.com", "/", [(b"x-env", b"prod"), *CANARY], "canary", None),  # any line
    ("GET", "other.net", "/", CURL, "curl", None),
    ("HEAD", "other.net", "/", CURL, "curl", None),
    ("POST", "other.net", "/", CURL, "default", None),
    ("GET", "other.net", "/", [(b"user-agent", b"xcurl/1")], "default", None),  # full match
    ("GET", "", "/", CURL, "curl", None),  # no Host: host-less routes still apply
    ("GET", "other.net", "/healthz", [], "health", None),
    ("GET", "other.net", "/healthz/", [], "default", None),
    ("GET", "other.net", "/healthz?x=1", [], "health", None),  # the query is not the path
    ("GET", "other.net", "/v1/items/42", [], "versioned", None),
    ("GET", "other.net", "/v1/items/42/x", [], "default", None),
    ("GET", "other.net", "/old/page?q=1", [], "legacy", "/new/page"),
    ("POST", "other.net", "/?debug", [], "debug", None),
    ("POST", "other.net", "/?debug=1&x", [], "debug", None),
    ("GET", "other.net", "/?debug", [], "default", None),
    ("POST", "other.net", "/?x=1", [], "default", None),
    ("GET", "www.example.com", "/shop/cart", [], "shop", None),
    ("GET", "www.example.com", "/shop/cart", [(b"x-bot", b"1")], "default", None),
    ("GET", "WWW.example.com", "/shop", [], "shop", None),
]


def request(method: str, host: str, target: str, headers: list) -> Request:
    return Request(method, target, list(headers), host=host)


@pytest.mark.parametrize(("method", "host", "target", "headers", "name", "path"), CASES)
def test_routing(method, host, target, headers, name, path):
    req = request(method, host, target, headers)
    match = Router(SITE).match(req)
    assert match is not None
    assert match.route.name == name
    assert match.path == path
    if path is not None:
        assert match.target == path + (f"?{req.query}" if req.query else "")
    else:
        assert match.target is None


@pytest.mark.parametrize(("method", "host", "target", "headers", "name", "path"), CASES)
def test_explain_agrees_with_the_router(method, host, target, headers, name, path):
    if not host:
        return
    text = explain(
        SITE, method, f"http://{host}{target}", [(k.decode(), v.decode()) for k, v in headers]
    )
    taken = [line for line in text.splitlines() if line.endswith(": matched")]
    assert taken == [f"route[{[r.name for r in SITE].index(name)}] {name!r}: matched"]


SHORT = '[[listener.web.routes]]\nname = "short"\npath_prefix = "/a"\npool = "p"\n'
LONG = '[[listener.web.routes]]\nname = "long"\npath_prefix = "/a/b"\npool = "p"\n'


@pytest.mark.parametrize(("tables", "name"), [(SHORT + LONG, "short"), (LONG + SHORT, "long")])
def test_first_match_wins_so_order_matters(tables, name):
    match = Router(routes_of(tables)).match(request("GET", "x", "/a/b/c", []))
    assert match is not None and match.route.name == name


def test_wildcard_before_exact_host_keeps_config_order():
    routes = routes_of("""
[[listener.web.routes]]
host = "*.example.com"
headers = [{name = "x-env", equals = "canary"}]
pool = "canary"

[[listener.web.routes]]
host = "api.example.com"
pool = "api"
""")
    router = Router(routes)
    canary = request("GET", "api.example.com", "/", [(b"x-env", b"canary")])
    assert router.match(canary).route.name == "route[0]"  # type: ignore[union-attr]
    assert router.match(request("GET", "api.example.com", "/", [])).route.name == "route[1]"  # type: ignore[union-attr]


def test_nested_wildcards_keep_config_order():
    routes = routes_of("""
[[listener.web.routes]]
host = "*.example.com"
methods = ["POST"]
pool = "writes"

[[listener.web.routes]]
host = "*.api.example.com"
pool = "api"

[[listener.web.routes]]
host = "*.example.com"
pool = "web"
""")
    router = Router(routes)

    def pool(method: str, host: str) -> str | None:
        match = router.match(request(method, host, "/", []))
        return match.route.action.pool if match else None  # type: ignore[union-attr]

    assert pool("POST", "x.api.example.com") == "writes"
    assert pool("GET", "x.api.example.com") == "api"
    assert pool("GET", "y.x.api.example.com") == "api"
    assert pool("GET", "api.example.com") == "web"
    assert pool("GET", "example.com") is None


def test_no_route_matched_is_none():
    routes = routes_of('[[listener.web.routes]]\nhost = "a.example.com"\npool = "p"')
    assert Router(routes).match(request("GET", "b.example.com", "/", [])) is None
    assert Router(()).match(request("GET", "b.example.com", "/", [])) is None


def test_default_route_takes_everything_left():
    routes = routes_of(
        '[[listener.web.routes]]\npath = "/x"\npool = "x"\n\n'
        '[[listener.web.routes]]\nname = "default"\npool = "web"'
    )
    router = Router(routes)
    for method, host, target in [("DELETE", "", "*"), ("GET", "h", "/"), ("PUT", "[::1]:80", "/y")]:
        assert router.match(request(method, host, target, [])).route.name == "default"  # type: ignore[union-attr]


def test_a_match_without_rewrite_is_made_once():
    router = Router(SITE)
    req = request("GET", "other.net", "/", [])
    assert router.match(req) is router.match(req)


# --- header operations ---

OPS = routes_of("""
[[listener.web.routes]]
pool = "p"
request_headers = {add = {"x-add" = "new"}, set = {"X-Set" = ["a", "b"]}, remove = ["X-Gone"]}
response_headers = {set = {"cache-control" = "no-store"}, add = {"x-served-by" = "l4lb"}}
""")[0]


def test_add_keeps_set_replaces_remove_removes_all_case_insensitively():
    headers = [
        (b"x-add", b"old"),
        (b"x-set", b"1"),
        (b"x-gone", b"1"),
        (b"accept", b"*/*"),
        (b"X-Set", b"2"),
        (b"X-GONE", b"2"),
    ]
    assert apply_request_headers(OPS, headers) == [
        (b"x-add", b"old"),
        (b"accept", b"*/*"),
        (b"x-set", b"a"),
        (b"x-set", b"b"),
        (b"x-add", b"new"),
    ]
    assert headers[2] == (b"x-gone", b"1")  # the input is not changed


def test_response_headers():
    out = apply_response_headers(OPS, [(b"cache-control", b"max-age=60"), (b"x-served-by", b"a")])
    assert out == [
        (b"x-served-by", b"a"),
        (b"cache-control", b"no-store"),
        (b"x-served-by", b"l4lb"),
    ]


def test_no_operations_return_the_same_list():
    headers = [(b"a", b"1")]
    route = SITE[0]
    assert apply_request_headers(route, headers) is headers
    assert apply_response_headers(route, headers) is headers


# --- redirects and fixed responses ---


def redirect(to: str, status: str = "") -> HttpRoute:
    extra = f", status = {status}" if status else ""
    return routes_of(f'[[listener.web.routes]]\nredirect = {{to = "{to}"{extra}}}')[0]


@pytest.mark.parametrize(
    ("to", "target", "location"),
    [
        ("https://{host}{target}", "/a/b?x=1&y=%20", "https://example.com/a/b?x=1&y=%20"),
        ("https://{host}{target}", "/a/b", "https://example.com/a/b"),
        ("https://{host}{target}", "/a/b?", "https://example.com/a/b"),
        ("https://{host}{path}", "/a?x=1", "https://example.com/a"),
        ("{scheme}://new.example.com{path}?{query}", "/a?x=1", "http://new.example.com/a?x=1"),
        ("https://{host}/{{literal}}", "/a", "https://example.com/{literal}"),
        ("{path}", "//evil.example/x", "/evil.example/x"),  # never scheme-relative
        ("https://{host}{path}", "/a b/é", "https://example.com/a%20b/%C3%A9"),
        ("/login?next={path}", "/account", "/login?next=/account"),
    ],
)
def test_redirect_targets(to, target, location):
    route = redirect(to)
    req = Request("GET", target, [], host="example.com:8080")
    assert render_redirect(route, req) == (302, location)


def test_redirect_status_and_hostile_host():
    route = redirect("https://{host}{path}", "308")
    req = Request("GET", "/", [], host="evil.example/x\r\nset-cookie: a")
    status, location = render_redirect(route, req)
    assert status == 308
    assert location == "https://evil.example%2Fx%0D%0Aset-cookie%3A%20a/"


def test_render_redirect_refuses_other_routes():
    with pytest.raises(TypeError):
        render_redirect(SITE[0], request("GET", "", "/", []))


def test_fixed_response():
    route = Router(SITE).match(request("GET", "x", "/healthz", [])).route  # type: ignore[union-attr]
    assert route.action == Respond(200, b"ok", "text/plain; charset=utf-8")


# --- explain ---


def test_explain_a_hit():
    text = explain(SITE, "GET", "http://api.example.com:8080/api/users?page=2", [])
    assert text == (
        "request: GET host 'api.example.com' path '/api/users' query 'page=2'\n"
        "route[0] 'api-v2': path '/api/users' does not start with /v2/; "
        "no query parameter v (wants '2')\n"
        "route[1] 'api': matched\n"
        "  forward to pool 'api' with path rewritten to /users"
    )


def test_explain_a_miss_and_every_reason():
    routes = routes_of("""
[[listener.web.routes]]
name = "api"
host = ["api.example.com", "*.api.example.com"]
methods = ["GET", "HEAD"]
path_regex = "/v[0-9]+/.*"
headers = [
  {name = "x-env", equals = "canary"},
  {name = "user-agent", regex = "curl/.*"},
  {name = "authorization", present = true},
  {name = "x-bot", present = false},
]
query = [{name = "v", equals = "2"}, {name = "debug", present = true}]
pool = "api"

[[listener.web.routes]]
path = "/old"
redirect = {status = 301, to = "https://{host}{target}"}
response_headers = {set = {"cache-control" = "no-store"}}

[[listener.web.routes]]
name = "deny"
path_prefix = "/admin"
respond = {status = 403, body = "forbidden"}
""")
    headers = [("X-Env", "prod"), ("User-Agent", "Mozilla/5.0"), ("x-bot", "1")]
    text = explain(routes, "POST", "https://www.example.com/v1?v=1", headers)
    assert text == (
        "request: POST host 'www.example.com' path '/v1' query 'v=1'\n"
        "route[0] 'api': host 'www.example.com' is not api.example.com or *.api.example.com; "
        "method 'POST' is not GET or HEAD; path '/v1' does not match /v[0-9]+/.*; "
        "header x-env is 'prod', not 'canary'; header user-agent 'Mozilla/5.0' does not "
        "match curl/.*; no header authorization; header x-bot is present; "
        "query parameter v is '1', not '2'; no query parameter debug\n"
        "route[1]: path '/v1' is not /old\n"
        "route[2] 'deny': path '/v1' does not start with /admin\n"
        "no route matched: 404"
    )
    assert explain(routes, "GET", "http://a.b/old?x", []).splitlines()[-3:] == [
        "route[1]: matched",
        "  redirect 301 to https://a.b/old?x",
        "  response headers: set cache-control: no-store",
    ]
    assert explain(routes, "GET", "http://a.b/admin", []).splitlines()[-1] == (
        "  respond 403 with 9 bytes of text/plain; charset=utf-8"
    )


def test_explain_host_header_wins_like_curl():
    text = explain(SITE, "GET", "http://127.0.0.1:8080/api/x", [("Host", "api.example.com")])
    assert "route[1] 'api': matched" in text


@pytest.mark.parametrize("url", ["/api", "ftp://example.com/", "example.com/api"])
def test_explain_needs_an_absolute_http_url_or_a_host(url):
    with pytest.raises(L4lbError):
        explain(SITE, "GET", url, [])


def test_explain_a_path_with_a_host_header():
    """`l4lb route FILE GET /api/x -H 'Host: api.example.com'`: what the request line and
    the Host header of a real request say."""
    text = explain(SITE, "GET", "/api/x?v=2", [("Host", "api.example.com")])
    assert text.splitlines()[0] == "request: GET host 'api.example.com' path '/api/x' query 'v=2'"
    assert "route[1] 'api': matched" in text
    req = request_from_url("GET", "/a", [("Host", "Example.com:8443")], scheme="https")
    assert (req.scheme, req.host, req.target) == ("https", "example.com", "/a")


def test_header_arg():
    assert header_arg("X-Env:  canary ") == ("X-Env", "canary")
    with pytest.raises(L4lbError):
        header_arg("no colon")


# --- the router and the explanation agree on arbitrary requests ---

HOSTS = ["api.example.com", "a.example.com", "a.b.example.com", "example.com", "other.net", ""]


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from(["GET", "HEAD", "POST"]),
    host=st.sampled_from(HOSTS),
    upper=st.booleans(),
    port=st.sampled_from(["", ":80", ":8443"]),
    path=st.sampled_from(["/", "/api", "/api/x", "/v2/y", "/healthz", "/v1/items/7", "/shop"]),
    query=st.sampled_from(["", "v=2", "debug", "v=1&v=2"]),
    headers=st.lists(
        st.tuples(
            st.sampled_from([b"x-env", b"authorization", b"user-agent", b"x-bot"]),
            st.sampled_from([b"canary", b"curl/8", b"prod", b""]),
        ),
        max_size=4,
    ),
)
def test_router_agrees_with_why_not(method, host, upper, port, path, query, headers):
    target = path + (f"?{query}" if query else "")
    raw_host = (host.upper() if upper else host) + (port if host else "")
    match = Router(SITE).match(Request(method, target, headers, host=raw_host))
    plain = Request(method, target, headers, host=host)
    expected = next((r for r in SITE if not why_not(r, plain)), None)
    assert (match.route if match else None) is expected


def test_request_from_url():
    req = request_from_url(
        "GET", "https://User@API.example.com:8443/a%20b?x=1#frag", [("X-A", "1")]
    )
    assert (req.scheme, req.host, req.target) == ("https", "api.example.com", "/a%20b?x=1")
    assert req.headers == [(b"host", b"API.example.com:8443"), (b"x-a", b"1")]
