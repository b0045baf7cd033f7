"""HTTP/2 request field sections (l7.h2fields): every RFC 9113 §8.2/§8.3 rule broken once is
malformed, well-formed requests (a plain CONNECT, RFC 8441's extended CONNECT) pass, and any
input gives a reason or None, never an exception."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from l7 import h2fields
from l7.h2fields import request_problem, trailer_problem

GET = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"x"), (b":path", b"/")]
WEBSOCKET = [(b":method", b"CONNECT"), (b":protocol", b"websocket"), (b":scheme", b"https"),
             (b":authority", b"x"), (b":path", b"/chat")]  # fmt: skip

GOOD = {
    "get": GET,
    "regular fields": [*GET, (b"accept", b"*/*"), (b"user-agent", b"h2load nghttp2/1.52.0")],
    "host only": [*GET[:2], GET[3], (b"host", b"x")],
    "host equal to :authority": [*GET, (b"host", b"x")],
    "te trailers": [*GET, (b"te", b"trailers")],
    "te Trailers": [*GET, (b"te", b"Trailers")],
    "empty value": [*GET, (b"x-empty", b"")],
    "inner whitespace and tab": [*GET, (b"x-a", b"a b\tc")],
    "other controls and obs-text in a value": [*GET, (b"x-a", b"a\x01\x7f\xffb")],
    "token punctuation in a name": [*GET, (b"x-!#$%&'*+.^_`|~", b"1")],
    "cookies": [*GET, (b"cookie", b"a=1"), (b"cookie", b"b=2")],
    "plain connect": [(b":method", b"CONNECT"), (b":authority", b"example.com:443")],
    "options asterisk": [(b":method", b"OPTIONS"), *GET[1:3], (b":path", b"*")],
}


@pytest.mark.parametrize("fields", GOOD.values(), ids=GOOD.keys())
def test_well_formed_requests_pass(fields):
    assert request_problem(fields, False) is None
    assert request_problem(fields, True) is None


def test_extended_connect_only_where_offered():
    assert request_problem(WEBSOCKET, True) is None
    assert "not allowed" in request_problem(WEBSOCKET, False)


def with_field(name: bytes, value: bytes) -> list[tuple[bytes, bytes]]:
    return [*GET, (name, value)]


BAD = {
    # §8.2.1 names
    "uppercase name": (with_field(b"X-Upper", b"1"), "invalid field name"),
    "empty name": (with_field(b"", b"1"), "invalid field name"),
    "space in name": (with_field(b"x a", b"1"), "invalid field name"),
    "NUL in name": (with_field(b"x\x00", b"1"), "invalid field name"),
    "DEL in name": (with_field(b"x\x7f", b"1"), "invalid field name"),
    "obs-text in name": (with_field(b"x\xe9", b"1"), "invalid field name"),
    "colon inside name": (with_field(b"x:y", b"1"), "invalid field name"),
    # §8.2.1 values
    "NUL in value": (with_field(b"x-a", b"a\x00b"), "value of b'x-a'"),
    "CR in value": (with_field(b"x-a", b"a\rb"), "value of b'x-a'"),
    "LF in value": (with_field(b"x-a", b"a\nb"), "value of b'x-a'"),
    "CRLF smuggling": (with_field(b"x-a", b"a\r\nHost: evil"), "value of b'x-a'"),
    "leading space": (with_field(b"x-a", b" a"), "value of b'x-a'"),
    "trailing tab": (with_field(b"x-a", b"a\t"), "value of b'x-a'"),
    "only a space": (with_field(b"x-a", b" "), "value of b'x-a'"),
    "space around a pseudo-header value": (
        [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"x"), (b":path", b"/ ")],
        "value of b':path'",
    ),
    # §8.2.2
    "connection": (with_field(b"connection", b"keep-alive"), "connection-specific"),
    "keep-alive": (with_field(b"keep-alive", b"5"), "connection-specific"),
    "proxy-connection": (with_field(b"proxy-connection", b"close"), "connection-specific"),
    "transfer-encoding": (with_field(b"transfer-encoding", b"chunked"), "connection-specific"),
    "upgrade": (with_field(b"upgrade", b"websocket"), "connection-specific"),
    "te gzip": (with_field(b"te", b"gzip"), "te other than trailers"),
    "te trailers, gzip": (with_field(b"te", b"trailers, gzip"), "te other than trailers"),
    # §8.3
    "status": (with_field(b":status", b"200"), ":status in a request"),
    "status first": ([(b":status", b"200"), *GET], ":status in a request"),
    "unknown pseudo-header": ([*GET[:3], (b":foo", b"1"), GET[3]], "not allowed"),
    "uppercase pseudo-header": ([*GET[:3], (b":Path", b"/")], "not allowed"),
    "pseudo-header after a regular one": (
        [*GET[:2], (b"x-a", b"1"), *GET[2:]],
        "after a regular field",
    ),
    "two :method": ([*GET[:1], *GET], "more than one :method"),
    "two :scheme": ([*GET[:2], *GET[1:]], "more than one :scheme"),
    "two :authority": ([*GET[:3], *GET[2:]], "more than one :authority"),
    "two :path": ([*GET, GET[3]], "more than one :path"),
    "two :protocol": ([*WEBSOCKET[:2], *WEBSOCKET[1:]], "more than one :protocol"),
    "no :method": (GET[1:], "no :method"),
    "empty :method": ([(b":method", b""), *GET[1:]], "no :method"),
    "no :path": (GET[:3], "no :scheme or :path"),
    "empty :path": ([*GET[:3], (b":path", b"")], "no :scheme or :path"),
    "no :scheme": ([GET[0], *GET[2:]], "no :scheme or :path"),
    "empty :scheme": ([GET[0], (b":scheme", b""), *GET[2:]], "no :scheme or :path"),
    "neither :authority nor host": ([GET[0], GET[1], GET[3]], "neither :authority nor host"),
    "host and :authority disagree": (with_field(b"host", b"y"), "disagree"),
    "two hosts": (
        [GET[0], GET[1], GET[3], (b"host", b"x"), (b"host", b"x")],
        "more than one host",
    ),
    # §8.5 CONNECT
    "connect with :path": (
        [(b":method", b"CONNECT"), (b":authority", b"x:443"), (b":path", b"/")],
        "CONNECT with :scheme or :path",
    ),
    "connect with :scheme": (
        [(b":method", b"CONNECT"), (b":scheme", b"https"), (b":authority", b"x:443")],
        "CONNECT with :scheme or :path",
    ),
    "connect without :authority": (
        [(b":method", b"CONNECT"), (b"host", b"x:443")],
        "CONNECT without :authority",
    ),
    "connect with an empty :authority": (
        [(b":method", b"CONNECT"), (b":authority", b"")],
        "CONNECT without :authority",
    ),
}


@pytest.mark.parametrize(("fields", "why"), BAD.values(), ids=BAD.keys())
def test_malformed_requests_say_why(fields, why):
    problem = request_problem(fields, True)
    assert problem is not None and why in problem, problem


def test_extended_connect_rules():
    # :protocol outside CONNECT, and an extended CONNECT without :path or :scheme (RFC 8441 §4)
    get = [*GET[:1], (b":protocol", b"websocket"), *GET[1:]]
    assert request_problem(get, True) == ":protocol outside CONNECT"
    assert "no :scheme or :path" in request_problem(WEBSOCKET[:4], True)
    no_scheme = [f for f in WEBSOCKET if f[0] != b":scheme"]
    assert "no :scheme or :path" in request_problem(no_scheme, True)
    # :authority or host, as any request
    by_host = [f for f in WEBSOCKET if f[0] != b":authority"]
    assert request_problem([*by_host, (b"host", b"x")], True) is None
    assert request_problem(by_host, True) == "neither :authority nor host"


def test_trailer_sections():
    assert trailer_problem([]) is None
    assert trailer_problem([(b"grpc-status", b"0"), (b"x-checksum", b"sha256=abc")]) is None
    assert "pseudo-header" in trailer_problem([(b":path", b"/")])
    assert "pseudo-header" in trailer_problem([(b"x-a", b"1"), (b":status", b"200")])
    assert "pseudo-header" in trailer_problem([(b":foo", b"1")])
    assert "invalid field name" in trailer_problem([(b"X-A", b"1")])
    assert "connection-specific" in trailer_problem([(b"transfer-encoding", b"chunked")])
    assert "te other" in trailer_problem([(b"te", b"gzip")])
    assert "value of" in trailer_problem([(b"x-a", b"1\r\n0\r\n\r\nGET / HTTP/1.1")])
    assert "value of" in trailer_problem([(b"x-a", b" 1")])


def test_the_name_memo_stays_bounded():
    for i in range(h2fields._MEMO_SIZE + 10):
        assert request_problem(with_field(b"x-%d" % i, b"1"), False) is None
    assert len(h2fields._KINDS) <= h2fields._MEMO_SIZE
    # what the memo was seeded with survives its clearing
    assert "connection-specific" in request_problem(with_field(b"upgrade", b"h2c"), False)
    assert request_problem(GET, False) is None


fields_st = st.lists(st.tuples(st.binary(max_size=12), st.binary(max_size=12)), max_size=8)


@given(fields_st, st.booleans())
def test_any_input_gives_a_reason_or_none(fields, connect):
    problem = request_problem(fields, connect)
    assert problem is None or isinstance(problem, str)
    problem = trailer_problem(fields)
    assert problem is None or isinstance(problem, str)


def one_value_bad(value: bytes) -> bool:
    return (
        any(c in value for c in b"\x00\r\n")
        or value[:1] in (b" ", b"\t")
        or value[-1:] in (b" ", b"\t")
    )


values_st = st.lists(st.binary(max_size=6).map(lambda b: b.replace(b"z", b"\n")), max_size=6)


@given(values_st)
def test_the_joined_value_check_is_the_per_value_one(values):
    """The values are checked in one search over their join: the same verdict as value by
    value, LF (the join's separator) inside a value included."""
    fields = [(b"x-a", v) for v in values]
    assert (h2fields._values_problem(fields) is not None) == any(map(one_value_bad, values))


_OLD_RULE = re.compile(rb"[\x00\r\n]|\A[ \t]|[ \t]\Z")  # §8.2.1 on one value


@given(
    st.lists(
        st.binary(max_size=6).map(lambda b: bytes(b" \t\r\n\x00a"[x % 6] for x in b)), max_size=5
    )
)
def test_the_joined_screen_finds_what_a_per_value_rule_finds(values):
    """The screen over the values joined by LF answers as §8.2.1 applied to each value."""
    fields = [(b"x-%d" % i, v) for i, v in enumerate(values)]
    expected = any(_OLD_RULE.search(v) for v in values)
    assert (h2fields._values_problem(fields) is not None) == expected
