from __future__ import annotations

from l4lb.config.schema import SniRoute
from l4lb.sni import SniRouter

ROUTES = [
    SniRoute(sni=("api.example.com",), pool="api"),
    SniRoute(sni=("*.example.com",), pool="h2only", alpn=("h2",)),
    SniRoute(sni=("*.example.com", "example.org"), pool="web"),
]


def test_exact_then_wildcard_first_match_wins():
    r = SniRouter(ROUTES, default="fallback")
    assert r.match("api.example.com") == "api"
    assert r.match("www.example.com") == "web"
    assert r.match("a.b.example.com") == "web"
    assert r.match("example.org") == "web"


def test_wildcard_does_not_match_the_bare_suffix():
    r = SniRouter(ROUTES)
    assert r.match("example.com") is None
    assert r.match("badexample.com") is None


def test_alpn_condition():
    r = SniRouter(ROUTES)
    assert r.match("www.example.com", ("h2", "http/1.1")) == "h2only"
    assert r.match("www.example.com", ("http/1.1",)) == "web"


def test_no_sni_and_no_match_use_the_default():
    assert SniRouter(ROUTES, default="d").match(None) == "d"
    assert SniRouter(ROUTES, default="d").match("other.net") == "d"
    assert SniRouter(ROUTES).match(None) is None
