"""Absolute-form request-targets (l7.target): one authority, origin-form upstream."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from l4lb.errors import RemoteProtocolError
from l7.target import origin_form, with_host


@pytest.mark.parametrize(
    "method, target, authority, origin",
    [
        ("GET", "http://evil.test/x", b"evil.test", "/x"),
        ("GET", "HTTP://a.test:8080/x/y?q=1&r", b"a.test:8080", "/x/y?q=1&r"),
        ("GET", "https://a.test", b"a.test", "/"),
        ("GET", "http://a.test?q", b"a.test", "/?q"),
        ("GET", "http://[::1]:80/p", b"[::1]:80", "/p"),
        ("GET", "http://[::1]/p", b"[::1]", "/p"),
        ("OPTIONS", "http://a.test", b"a.test", "*"),  # RFC 9112 §3.2.4
        ("OPTIONS", "http://a.test/", b"a.test", "/"),
        ("OPTIONS", "http://a.test?x", b"a.test", "/?x"),
    ],
)
def test_origin_form(method: str, target: str, authority: bytes, origin: str) -> None:
    assert origin_form(method, target) == (authority, origin)


@pytest.mark.parametrize(
    "target",
    [
        "ftp://a.test/x",  # a scheme l4lb does not serve
        "http://user:pw@a.test/x",  # userinfo (RFC 9110 §4.2.4)
        "http://@a.test/x",
        "http:///x",  # empty host (RFC 9110 §4.2.1)
        "http://:80/x",
        "http://a.test/x#f",  # a fragment is not part of a request-target
        "http://a test/",
        "http://a.test:8x/",
        "http://[::1/",
    ],
)
def test_origin_form_refuses(target: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        origin_form("GET", target)
    assert info.value.status_hint == 400


def test_with_host_replaces_or_adds() -> None:
    headers = [(b"accept", b"*/*"), (b"host", b"a.test"), (b"x", b"1")]
    assert with_host(headers, b"evil.test") == [
        (b"accept", b"*/*"),
        (b"host", b"evil.test"),
        (b"x", b"1"),
    ]
    assert headers[1] == (b"host", b"a.test")  # the input is not changed
    assert with_host([(b"x", b"1")], b"b.test") == [(b"host", b"b.test"), (b"x", b"1")]


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-._~:/?#[]@!$&'()*+,;=%", max_size=40))
def test_origin_form_is_origin_form_or_400(rest: str) -> None:
    """Whatever follows `http://`: a 400, or an authority with no userinfo and an origin-form
    target that starts with "/" and keeps the rest of the URI as it was."""
    try:
        authority, origin = origin_form("GET", "http://" + rest)
    except RemoteProtocolError as exc:
        assert exc.status_hint == 400
        return
    assert authority and b"@" not in authority and b"/" not in authority
    assert rest.startswith(authority.decode())
    tail = rest[len(authority) :]
    assert origin == (tail if tail.startswith("/") else "/" + tail) and "#" not in origin
