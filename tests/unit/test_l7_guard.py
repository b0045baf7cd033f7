"""A route's `access` and `rate_limits`: parsed into RouteSecurity, located errors."""

from __future__ import annotations

import pytest

from l4lb.config import load_text
from l4lb.errors import ConfigErrors

BASE = """\
[listener.web]
bind = "127.0.0.1:8080"
protocol = "http"
[[listener.web.routes]]
pool = "api"
{route}
[pool.api]
[[pool.api.servers]]
address = "127.0.0.1:9001"
"""


def _route(text: str):
    return load_text(BASE.format(route=text), "site.toml").listeners[0].routes[0]


def _errors(text: str) -> str:
    with pytest.raises(ConfigErrors) as info:
        _route(text)
    return "\n".join(str(e) for e in info.value.errors)


def test_parsed():
    route = _route(
        'access = {deny = ["192.0.2.0/24"]}\n'
        'rate_limits = [{rate = 5, per = "10s", key = "header:X-Api-Key"}, {rate = 100}]'
    )
    sec = route.security
    assert sec.access.deny == ("192.0.2.0/24",)
    first, second = sec.rate_limits
    assert (first.name, first.rate, first.per, first.key) == (
        "limit[0]",
        5,
        10.0,
        "header:x-api-key",
    )
    assert (second.name, second.key, second.per) == ("limit[1]", "client", 1.0)


def test_no_security_is_none():
    assert _route("").security is None


def test_errors_are_located():
    assert "routes[0].rate_limits[0].rate: missing required key 'rate'" in _errors(
        'rate_limits = [{per = "1s"}]'
    )
    assert "'cookie:x' is not a rate-limit key" in _errors(
        'rate_limits = [{rate = 1, key = "cookie:x"}]'
    )
    assert "unknown key 'max_per_client'" in _errors("access = {max_per_client = 3}")
    assert "routes[0].access.allow" in _errors('access = {allow = ["nope"]}')
