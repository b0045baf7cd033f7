"""Request and response header policy: exact outputs, trust, IPv6, request IDs, trace context."""

from __future__ import annotations

import ipaddress
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from l7.forwarded import (
    REWRITTEN,
    forward_headers,
    forwarding_lines,
    new_request_id,
    new_traceparent,
    request_id_from,
    response_hop_by_hop_filter,
    security_headers,
    valid_traceparent,
)
from l7.model import Headers

TRUSTED = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8:ff::/48")]
RID = "0123456789abcdef0123456789abcdef"
TRACE = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def forward(headers: Headers, client_ip: str = "203.0.113.7", **kwargs: object) -> Headers:
    options: dict[str, object] = {
        "client_ip": client_ip,
        "scheme": "https",
        "host": "example.com",
        "trusted": TRUSTED,
        "request_id": RID,
    }
    options.update(kwargs)
    return forward_headers(headers, **options)  # type: ignore[arg-type]


def values(headers: Headers, name: bytes) -> list[bytes]:
    return [v for k, v in headers if k == name]


def test_plain_request_exact_output() -> None:
    headers = [(b"host", b"example.com"), (b"accept", b"*/*")]
    assert forward(headers) == [
        (b"host", b"example.com"),
        (b"accept", b"*/*"),
        (b"via", b"1.1 l4lb"),
        (b"x-forwarded-for", b"203.0.113.7"),
        (b"x-forwarded-proto", b"https"),
        (b"x-forwarded-host", b"example.com"),
        (b"x-request-id", RID.encode()),
    ]


def test_input_is_not_changed() -> None:
    headers = [(b"host", b"a"), (b"connection", b"close")]
    copy = list(headers)
    forward(headers)
    assert headers == copy


def test_hop_by_hop_and_nominated_fields_are_removed() -> None:
    headers = [
        (b"host", b"example.com"),
        (b"connection", b"keep-alive, X-Secret , Upgrade"),
        (b"connection", b"x-other"),
        (b"keep-alive", b"timeout=5"),
        (b"proxy-connection", b"keep-alive"),
        (b"te", b"trailers"),
        (b"trailer", b"x-checksum"),
        (b"transfer-encoding", b"chunked"),
        (b"upgrade", b"websocket"),
        (b"x-secret", b"1"),
        (b"x-other", b"2"),
        (b"x-kept", b"3"),
    ]
    out = forward(headers)
    names = [k for k, _ in out]
    assert names[:2] == [b"host", b"x-kept"]
    for gone in (b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer"):
        assert gone not in names
    for gone in (b"transfer-encoding", b"upgrade", b"x-secret", b"x-other"):
        assert gone not in names


def test_connection_cannot_remove_host_or_content_length() -> None:
    headers = [
        (b"host", b"example.com"),
        (b"content-length", b"3"),
        (b"connection", b"Host, Content-Length, X-Forwarded-For"),
        (b"x-forwarded-for", b"10.9.9.9"),
    ]
    out = forward(headers, client_ip="10.1.1.1")
    assert values(out, b"host") == [b"example.com"]
    assert values(out, b"content-length") == [b"3"]
    # nominating X-Forwarded-For drops the client's copy; ours is still sent
    assert values(out, b"x-forwarded-for") == [b"10.1.1.1"]


def test_upgrade_is_kept_for_websocket() -> None:
    headers = [
        (b"host", b"example.com"),
        (b"connection", b"Upgrade, HTTP2-Settings"),
        (b"upgrade", b"websocket"),
        (b"http2-settings", b"AAMAAABkAAQCAAAAAAIAAAAA"),
        (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
        (b"sec-websocket-version", b"13"),
    ]
    out = forward(headers, upgrade=True)
    assert out[:5] == [
        (b"host", b"example.com"),
        (b"upgrade", b"websocket"),
        (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
        (b"sec-websocket-version", b"13"),
        (b"connection", b"upgrade"),
    ]
    assert values(out, b"http2-settings") == []
    # without upgrade=True the same request loses both
    plain = forward(headers)
    assert values(plain, b"upgrade") == values(plain, b"connection") == []


def test_untrusted_client_cannot_forge_forwarding_headers() -> None:
    headers = [
        (b"host", b"example.com"),
        (b"x-forwarded-for", b"1.2.3.4"),
        (b"x-forwarded-for", b"5.6.7.8"),
        (b"x-forwarded-proto", b"http"),
        (b"x-forwarded-host", b"evil.example"),
        (b"forwarded", b"for=1.2.3.4"),
    ]
    out = forward(headers, forwarded_header=True)
    # X-Forwarded-For is appended to (the last hop is ours: a server counts from the right);
    # the single-valued ones and Forwarded are replaced for an untrusted client.
    assert values(out, b"x-forwarded-for") == [b"1.2.3.4, 5.6.7.8, 203.0.113.7"]
    assert values(out, b"x-forwarded-proto") == [b"https"]
    assert values(out, b"x-forwarded-host") == [b"example.com"]
    assert values(out, b"forwarded") == [b"for=203.0.113.7;proto=https;host=example.com"]
    replaced = forward(headers, forwarded_header=True, x_forwarded_for="replace")
    assert values(replaced, b"x-forwarded-for") == [b"203.0.113.7"]
    assert [h for h in replaced if h[0] != b"x-forwarded-for"] == [
        h for h in out if h[0] != b"x-forwarded-for"
    ]


def test_replace_still_extends_a_trusted_proxys_chain() -> None:
    headers = [(b"host", b"example.com"), (b"x-forwarded-for", b"198.51.100.1")]
    out = forward(headers, client_ip="10.0.0.3", x_forwarded_for="replace")
    assert values(out, b"x-forwarded-for") == [b"198.51.100.1, 10.0.0.3"]


def test_trusted_proxy_chains_are_extended() -> None:
    headers = [
        (b"host", b"example.com"),
        (b"x-forwarded-for", b"198.51.100.1"),
        (b"x-forwarded-for", b"192.0.2.9, 10.0.0.2"),
        (b"x-forwarded-proto", b"https"),
        (b"x-forwarded-host", b"www.example.com"),
        (b"forwarded", b'for=198.51.100.1;proto=https, for="[2001:db8::1]"'),
        (b"via", b"1.0 fred, 1.1 p.example.net"),
    ]
    out = forward(
        headers, client_ip="10.0.0.3", scheme="http", host="example.com", forwarded_header=True
    )
    assert values(out, b"x-forwarded-for") == [b"198.51.100.1, 192.0.2.9, 10.0.0.2, 10.0.0.3"]
    assert values(out, b"x-forwarded-proto") == [b"https"]  # the trusted proxy's, kept
    assert values(out, b"x-forwarded-host") == [b"www.example.com"]
    assert values(out, b"forwarded") == [
        b'for=198.51.100.1;proto=https, for="[2001:db8::1]", '
        b"for=10.0.0.3;proto=http;host=example.com"
    ]
    assert values(out, b"via") == [b"1.0 fred, 1.1 p.example.net, 1.1 l4lb"]


def test_trusted_proxy_without_headers_gets_ours() -> None:
    out = forward([(b"host", b"example.com")], client_ip="10.0.0.3", scheme="http")
    assert values(out, b"x-forwarded-for") == [b"10.0.0.3"]
    assert values(out, b"x-forwarded-proto") == [b"http"]
    assert values(out, b"x-forwarded-host") == [b"example.com"]


def test_ipv6_client() -> None:
    out = forward(
        [(b"host", b"[2001:db8::5]:8443")],
        client_ip="2001:DB8:0::1",
        host="[2001:db8::5]:8443",
        forwarded_header=True,
    )
    assert values(out, b"x-forwarded-for") == [b"2001:db8::1"]
    assert values(out, b"forwarded") == [
        b'for="[2001:db8::1]";proto=https;host="[2001:db8::5]:8443"'
    ]


def test_trusted_ipv6_proxy_and_ipv4_mapped_client() -> None:
    out = forward([(b"x-forwarded-for", b"192.0.2.1")], client_ip="2001:db8:ff::7")
    assert values(out, b"x-forwarded-for") == [b"192.0.2.1, 2001:db8:ff::7"]
    # a dual-stack socket reports an IPv4 client as ::ffff:a.b.c.d
    out = forward([(b"x-forwarded-for", b"192.0.2.1")], client_ip="::ffff:10.1.2.3")
    assert values(out, b"x-forwarded-for") == [b"192.0.2.1, 10.1.2.3"]


def test_forwarded_quotes_what_is_not_a_token() -> None:
    out = forward([], host='we"ird\\host', forwarded_header=True)
    assert values(out, b"forwarded") == [b'for=203.0.113.7;proto=https;host="we\\"ird\\\\host"']


def test_forwarded_off_drops_the_clients() -> None:
    out = forward([(b"forwarded", b"for=10.0.0.1")], client_ip="10.0.0.2")
    assert values(out, b"forwarded") == []


def test_empty_host_sends_no_x_forwarded_host() -> None:
    out = forward([], host="")
    assert values(out, b"x-forwarded-host") == []


def test_request_id_replaces_the_clients() -> None:
    out = forward([(b"x-request-id", b"client-id")], request_id="ours")
    assert values(out, b"x-request-id") == [b"ours"]


def test_bad_client_ip_is_a_caller_bug() -> None:
    with pytest.raises(ValueError):
        forward([], client_ip="")


# -- trace context --------------------------------------------------------------------------------


def test_valid_traceparent_passes_with_tracestate() -> None:
    headers = [(b"traceparent", TRACE), (b"tracestate", b"rojo=00f067aa0ba902b7")]
    for mode in ("pass", "create"):
        out = forward(headers, traceparent=mode)
        assert values(out, b"traceparent") == [TRACE]
        assert values(out, b"tracestate") == [b"rojo=00f067aa0ba902b7"]


@pytest.mark.parametrize(
    "bad",
    [
        b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace-id
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero parent-id
        b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # version ff
        b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",  # v00 is 55 chars
        b"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        b"garbage",
        b"",
    ],
)
def test_invalid_traceparent_is_dropped_or_replaced(bad: bytes) -> None:
    assert not valid_traceparent(bad)
    headers = [(b"traceparent", bad), (b"tracestate", b"a=b")]
    out = forward(headers, traceparent="pass")
    assert values(out, b"traceparent") == values(out, b"tracestate") == []
    out = forward(headers, traceparent="create")
    (created,) = values(out, b"traceparent")
    assert created != bad and valid_traceparent(created)
    assert values(out, b"tracestate") == []


def test_future_version_traceparent_may_be_longer() -> None:
    assert valid_traceparent(b"cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the")


def test_two_traceparents_are_invalid() -> None:
    out = forward([(b"traceparent", TRACE), (b"traceparent", TRACE)], traceparent="pass")
    assert values(out, b"traceparent") == []


def test_traceparent_created_when_absent() -> None:
    assert values(forward([], traceparent="pass"), b"traceparent") == []
    (created,) = values(forward([], traceparent="create"), b"traceparent")
    assert re.fullmatch(rb"00-[0-9a-f]{32}-[0-9a-f]{16}-01", created)
    assert new_traceparent() != new_traceparent()


# -- request ids ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"abc", "abc"),
        (b"f47ac10b-58cc-4372-a567-0e02b2c3d479", "f47ac10b-58cc-4372-a567-0e02b2c3d479"),
        (b"a.b_c~d+e/f=g-", "a.b_c~d+e/f=g-"),
        (b"x" * 200, "x" * 200),
        (b"x" * 201, None),
        (b"", None),
        (b"has space", None),
        (b"semi;colon", None),
        (b"caf\xc3\xa9", None),
    ],
)
def test_request_id_from(value: bytes, expected: str | None) -> None:
    assert request_id_from([(b"host", b"h"), (b"x-request-id", value)]) == expected


def test_request_id_absent() -> None:
    assert request_id_from([(b"host", b"h")]) is None


def test_new_request_id() -> None:
    first, second = new_request_id(), new_request_id()
    assert re.fullmatch(r"[0-9a-f]{32}", first)
    assert first != second
    assert request_id_from([(b"x-request-id", first.encode())]) == first


# -- responses ------------------------------------------------------------------------------------


def test_response_hop_by_hop_filter() -> None:
    headers = [
        (b"content-type", b"text/html"),
        (b"connection", b"keep-alive, x-hop"),
        (b"keep-alive", b"timeout=5"),
        (b"transfer-encoding", b"chunked"),
        (b"x-hop", b"1"),
        (b"upgrade", b"h2c"),
        (b"trailer", b"expires"),
        (b"content-length", b"10"),
    ]
    assert response_hop_by_hop_filter(headers) == [
        (b"content-type", b"text/html"),
        (b"content-length", b"10"),
    ]


def test_response_filter_keeps_switching_protocols() -> None:
    headers = [
        (b"upgrade", b"websocket"),
        (b"connection", b"Upgrade"),
        (b"sec-websocket-accept", b"x"),
    ]
    assert response_hop_by_hop_filter(headers, upgrade=True) == [
        (b"upgrade", b"websocket"),
        (b"sec-websocket-accept", b"x"),
        (b"connection", b"upgrade"),
    ]


# -- security headers -----------------------------------------------------------------------------


def test_security_headers_all() -> None:
    assert security_headers(
        hsts_max_age=31536000,
        include_subdomains=True,
        frame_options="sameorigin",
        content_type_options=True,
        referrer_policy="no-referrer, strict-origin-when-cross-origin",
    ) == [
        (b"strict-transport-security", b"max-age=31536000; includeSubDomains"),
        (b"x-frame-options", b"SAMEORIGIN"),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer, strict-origin-when-cross-origin"),
    ]


def test_security_headers_none() -> None:
    assert security_headers(None, False, None, False, None) == []
    assert security_headers(hsts_max_age=0) == [(b"strict-transport-security", b"max-age=0")]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"hsts_max_age": -1},
        {"frame_options": "ALLOW-FROM https://x"},
        {"frame_options": "DENY\r\nX: y"},
        {"referrer_policy": "everything"},
    ],
)
def test_security_headers_refuse_bad_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        security_headers(**kwargs)  # type: ignore[arg-type]


# -- properties -----------------------------------------------------------------------------------

NAMES = st.sampled_from(
    [b"host", b"connection", b"upgrade", b"x-forwarded-for", b"forwarded", b"via", b"x-a", b"te"]
)
HEADERS = st.lists(st.tuples(NAMES, st.binary(max_size=20)), max_size=12)


@given(HEADERS, st.booleans(), st.booleans(), st.sampled_from(["append", "replace"]))
def test_no_hop_by_hop_field_survives(
    headers: Headers, trusted: bool, upgrade: bool, xff_mode: str
) -> None:
    client_ip = "10.0.0.1" if trusted else "192.0.2.1"
    out = forward(headers, client_ip=client_ip, upgrade=upgrade, x_forwarded_for=xff_mode)
    names = [k for k, _ in out]
    for name in (b"te", b"keep-alive", b"transfer-encoding"):
        assert name not in names
    assert names.count(b"connection") == (1 if upgrade else 0)
    for name in (b"x-forwarded-for", b"via", b"x-request-id"):
        assert names.count(name) == 1
    (xff,) = values(out, b"x-forwarded-for")
    assert xff.endswith(b"10.0.0.1" if trusted else b"192.0.2.1")
    if not trusted and xff_mode == "replace":
        assert xff == b"192.0.2.1"


PLAIN_NAMES = st.sampled_from([b"host", b"accept", b"user-agent", b"cookie", b"x-a", b"connection"])


@given(
    st.lists(st.tuples(PLAIN_NAMES, st.binary(max_size=20)), max_size=10),
    st.sampled_from(["192.0.2.1", "10.0.0.1", "2001:db8::1", "::ffff:192.0.2.9"]),
    st.sampled_from(["", "example.com", "example.com:8443", "[::1]:80"]),
    st.booleans(),
    st.sampled_from(["append", "replace"]),
)
def test_forwarding_lines_are_what_forward_headers_appends(
    headers: Headers, client_ip: str, host: str, forwarded_header: bool, xff_mode: str
) -> None:
    """The HTTP hot path sends a request without REWRITTEN fields (but for a lone
    `Connection: keep-alive`) as its own fields + forwarding_lines + X-Request-ID: that must
    be exactly what forward_headers makes of it, trusted client or not, whichever
    x_forwarded_for mode (a request with its own X-Forwarded-For takes the general path)."""
    headers = [(n, b"keep-alive") if n == b"connection" else (n, v) for n, v in headers]
    out = forward(
        headers,
        client_ip=client_ip,
        host=host,
        forwarded_header=forwarded_header,
        x_forwarded_for=xff_mode,
    )
    fast = [(n, v) for n, v in headers if n not in REWRITTEN]
    lines = forwarding_lines(client_ip, "https", host, tuple(TRUSTED), forwarded_header)
    fast += [tuple(line.split(b": ", 1)) for line in lines.split(b"\r\n") if line]
    fast.append((b"x-request-id", RID.encode()))
    assert out == fast
