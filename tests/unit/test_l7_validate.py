"""Request-head validation: every smuggling and limit case refused with its status, every good
head accepted, and nothing but RemoteProtocolError for arbitrary input; and the error page a
refused request gets (l7.errors_page), read back by an h11 client."""

from __future__ import annotations

from http import HTTPStatus

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from l4lb.errors import LocalProtocolError, RemoteProtocolError
from l7.errors_page import error_response
from l7.model import Headers, Response
from l7.validate import (
    BodyLimit,
    check_chunk_size_line,
    check_raw_head,
    check_request_head,
    content_length,
)

HOST = (b"host", b"example.com")


def status_of(
    headers: Headers, method: str = "GET", target: str = "/", **kwargs: object
) -> int | None:
    try:
        check_request_head(method, target, headers, **kwargs)  # type: ignore[arg-type]
    except RemoteProtocolError as error:
        return error.status_hint
    return None


# -- good heads -----------------------------------------------------------------------------------

GOOD: list[tuple[str, str, Headers, str]] = [
    ("GET", "/", [HOST], "1.1"),
    ("GET", "/a/b?c=d&e=%20f", [HOST, (b"accept", b"*/*"), (b"user-agent", b"curl/8.5.0")], "1.1"),
    ("POST", "/upload", [HOST, (b"content-length", b"42")], "1.1"),
    ("POST", "/upload", [HOST, (b"content-length", b"0")], "1.1"),
    ("POST", "/upload", [HOST, (b"content-length", b"5"), (b"content-length", b"5")], "1.1"),
    ("POST", "/upload", [HOST, (b"content-length", b"5, 5,5")], "1.1"),
    ("POST", "/upload", [HOST, (b"transfer-encoding", b"chunked")], "1.1"),
    ("POST", "/upload", [HOST, (b"transfer-encoding", b" Chunked ")], "1.1"),
    ("GET", "/", [], "1.0"),  # HTTP/1.0 needs no Host
    ("GET", "/", [(b"Host", b"Example.COM:8080"), (b"X-Mixed-Case", b"ok")], "1.1"),
    ("GET", "/", [(b"host", b"[2001:db8::1]:443")], "1.1"),
    ("GET", "/", [(b"host", b"")], "1.1"),  # RFC 9110 §7.2: empty when the URI has no authority
    ("GET", "/", [(b"host", b"127.0.0.1")], "1.1"),
    ("GET", "/", [HOST, (b"x-ctl", b"a\x01b\tc"), (b"x-high", b"caf\xc3\xa9")], "1.1"),
    ("GET", "http://example.com/x", [HOST], "1.1"),
    ("OPTIONS", "*", [HOST], "1.1"),
    ("CONNECT", "example.com:443", [(b"host", b"example.com:443")], "1.1"),
    ("PURGE", "/cache", [HOST], "1.1"),
]


@pytest.mark.parametrize(("method", "target", "headers", "version"), GOOD)
def test_good_heads_pass(method: str, target: str, headers: Headers, version: str) -> None:
    check_request_head(method, target, headers, version=version)


# -- smuggling and malformed heads ----------------------------------------------------------------

BAD: list[tuple[str, Headers, int]] = [
    # RFC 9112 §6.3 rule 3: both framings
    ("cl+te", [HOST, (b"content-length", b"5"), (b"transfer-encoding", b"chunked")], 400),
    ("te+cl", [HOST, (b"transfer-encoding", b"chunked"), (b"content-length", b"0")], 400),
    (
        "cl+te mixed case",
        [HOST, (b"Content-Length", b"5"), (b"Transfer-Encoding", b"chunked")],
        400,
    ),
    # rule 5: Content-Length
    ("cl differ", [HOST, (b"content-length", b"5"), (b"content-length", b"6")], 400),
    ("cl differ in list", [HOST, (b"content-length", b"5, 6")], 400),
    ("cl not digits", [HOST, (b"content-length", b"abc")], 400),
    ("cl negative", [HOST, (b"content-length", b"-1")], 400),
    ("cl plus", [HOST, (b"content-length", b"+5")], 400),
    ("cl hex", [HOST, (b"content-length", b"0x5")], 400),
    ("cl inner space", [HOST, (b"content-length", b"5 5")], 400),
    ("cl empty", [HOST, (b"content-length", b"")], 400),
    ("cl empty element", [HOST, (b"content-length", b"5,")], 400),
    ("cl arabic-indic digit five", [HOST, (b"content-length", "\u0665".encode())], 400),
    ("cl huge", [HOST, (b"content-length", b"9" * 40)], 400),
    ("cl enormous", [HOST, (b"content-length", b"1" * 5000)], 400),
    # rule 4 and §7: Transfer-Encoding
    ("te gzip only", [HOST, (b"transfer-encoding", b"gzip")], 400),
    ("te chunked not last", [HOST, (b"transfer-encoding", b"chunked, gzip")], 400),
    ("te chunked twice", [HOST, (b"transfer-encoding", b"chunked, chunked")], 400),
    (
        "te chunked twice over lines",
        [HOST, (b"transfer-encoding", b"chunked"), (b"transfer-encoding", b"chunked")],
        400,
    ),
    ("te identity", [HOST, (b"transfer-encoding", b"identity")], 400),
    ("te params", [HOST, (b"transfer-encoding", b"chunked;foo=bar")], 400),
    ("te trailing comma", [HOST, (b"transfer-encoding", b"chunked,")], 400),
    ("te vertical tab", [HOST, (b"transfer-encoding", b"\x0bchunked")], 400),
    ("te chunkedx", [HOST, (b"transfer-encoding", b"chunkedx")], 400),
    ("te empty", [HOST, (b"transfer-encoding", b"")], 400),
    ("te gzip, chunked", [HOST, (b"transfer-encoding", b"gzip, chunked")], 501),
    (
        "te over two lines",
        [HOST, (b"transfer-encoding", b"gzip"), (b"transfer-encoding", b"chunked")],
        501,
    ),
    # RFC 9110 §5.5, §5.6.2: names and values
    ("name with space", [HOST, (b"x bad", b"1")], 400),
    ("name empty", [HOST, (b"", b"1")], 400),
    ("name with colon", [HOST, (b"x:y", b"1")], 400),
    ("name with nul", [HOST, (b"x\x00", b"1")], 400),
    ("name non-ascii", [HOST, ("é".encode(), b"1")], 400),
    ("value CR", [HOST, (b"x-a", b"1\r2")], 400),
    ("value LF", [HOST, (b"x-a", b"1\n2")], 400),
    ("value CRLF injection", [HOST, (b"x-a", b"1\r\nTransfer-Encoding: chunked")], 400),
    ("value NUL", [HOST, (b"x-a", b"1\x002")], 400),
    # RFC 9112 §3.2: Host
    ("no host", [(b"accept", b"*/*")], 400),
    ("two hosts", [HOST, (b"host", b"example.com")], 400),
    ("two hosts mixed case", [HOST, (b"Host", b"other.example")], 400),
    ("host with space", [(b"host", b"a b")], 400),
    ("host with slash", [(b"host", b"a/b")], 400),
    ("host with userinfo", [(b"host", b"user@a")], 400),
    ("host bad port", [(b"host", b"a:b")], 400),
]


@pytest.mark.parametrize(("case", "headers", "status"), BAD, ids=[c for c, _, _ in BAD])
def test_bad_heads_are_refused(case: str, headers: Headers, status: int) -> None:
    assert status_of(headers, "POST", "/") == status


def test_transfer_encoding_in_http_1_0_is_refused() -> None:
    headers = [(b"transfer-encoding", b"chunked")]
    assert status_of(headers, version="1.0") == 400


def test_two_hosts_in_http_1_0_are_refused() -> None:
    assert status_of([HOST, HOST], version="1.0") == 400


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("GE T", "/"),
        ("", "/"),
        ("GET\r\n", "/"),
        ("GÉT", "/"),
        ("GET", ""),
        ("GET", "/a b"),
        ("GET", "/a\tb"),
        ("GET", "/a\x7fb"),
        ("GET", "/a\x00"),
        ("GET", "*"),
        ("OPTIONS", "**"),
        ("GET", "relative/path"),
        ("GET", "example.com:443"),
        ("CONNECT", "/"),
        ("CONNECT", "*"),
        ("CONNECT", "http://example.com/"),
    ],
)
def test_bad_request_lines_are_refused(method: str, target: str) -> None:
    assert status_of([HOST], method, target) == 400


def test_uri_limit_is_414() -> None:
    target = "/" + "a" * 99
    assert status_of([HOST], target=target, max_uri=100) is None
    assert status_of([HOST], target=target + "a", max_uri=100) == 414
    assert status_of([HOST], target="/" + "a" * 8192) == 414  # default 8192


def test_header_count_limit_is_431() -> None:
    headers = [HOST] + [(b"x-a", b"1")] * 99
    assert status_of(headers) is None
    assert status_of([*headers, (b"x-b", b"2")]) == 431
    assert status_of(headers[:10], max_headers=9) == 431


def test_header_bytes_limit_is_431() -> None:
    # each line counts as `name: value\r\n`
    headers = [(b"host", b"abc")]  # 4 + 3 + 4 = 11 bytes
    assert status_of(headers, max_header_bytes=11) is None
    assert status_of(headers, max_header_bytes=10) == 431
    assert status_of([HOST, (b"cookie", b"a" * 40000)]) == 431  # default 32 KiB


def test_uri_limit_wins_over_other_problems() -> None:
    assert status_of([], target="/" + "a" * 200, max_uri=100) == 414


def test_content_length_value() -> None:
    assert content_length([b"42"]) == 42
    assert content_length([b" 7 , 7", b"7"]) == 7
    assert content_length([b"000"]) == 0


# -- raw head -------------------------------------------------------------------------------------

GOOD_RAW = [
    b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: example.com\r\nX-Empty:\r\nX-Spaced:   v  \r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: example.com\r\n",  # no empty line
    b"\r\nGET / HTTP/1.1\r\nHost: example.com\r\n\r\n",  # RFC 9112 §2.2: leading CRLF ignored
    b"GET / HTTP/1.0\r\n\r\n",
]


@pytest.mark.parametrize("raw", GOOD_RAW)
def test_good_raw_heads_pass(raw: bytes) -> None:
    check_raw_head(raw)


BAD_RAW = [
    b"GET / HTTP/1.1\r\nHost: example.com\r\nX-Folded: a\r\n b\r\n\r\n",  # obs-fold
    b"GET / HTTP/1.1\r\nHost: example.com\r\nX-Folded: a\r\n\tb\r\n\r\n",  # obs-fold with tab
    b"GET / HTTP/1.1\r\n Host: example.com\r\n\r\n",  # whitespace before first field
    b"GET / HTTP/1.1\nHost: example.com\n\n",  # bare LF
    b"GET / HTTP/1.1\r\nHost: example.com\nX: y\r\n\r\n",  # one bare LF
    b"GET / HTTP/1.1\r\nHost: exa\rmple.com\r\n\r\n",  # bare CR
    b"GET / HTTP/1.1\r\nHost: example.com\r\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: exa\x00mple.com\r\n\r\n",  # NUL
    b"GET / HTTP/1.1\r\nHost : example.com\r\n\r\n",  # space before colon
    b"GET / HTTP/1.1\r\nHost\t: example.com\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost example.com\r\n\r\n",  # no colon
    b"GET / HTTP/1.1\r\n: example.com\r\n\r\n",  # no name
]


@pytest.mark.parametrize("raw", BAD_RAW)
def test_bad_raw_heads_are_refused(raw: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        check_raw_head(raw)
    assert info.value.status_hint == 400


# -- chunk-size lines -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "size"),
    [
        (b"0", 0),
        (b"0\r\n", 0),
        (b"1a\r\n", 26),
        (b"FFff", 0xFFFF),
        (b"5;ext", 5),
        (b"5;a=b;c", 5),
        (b"5 ; name = value", 5),
        (b'5;n="q\\"uoted; x"', 5),
        (b"0000000000000010", 16),  # 16 hex digits
        (b"ffffffffffffffff", 2**64 - 1),
    ],
)
def test_good_chunk_size_lines(line: bytes, size: int) -> None:
    assert check_chunk_size_line(line) == size


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"\r\n",
        b" 5",
        b"5 ",
        b"5\t",
        b"0x5",
        b"-5",
        b"+5",
        b"g",
        b"5\r",
        b"5\n",
        b"5\r\n\r\n",
        b"5\n\r\n",
        b"5;",
        b"5;=x",
        b"5;a=",
        b'5;a="unterminated',
        b"5;a=b c",
        b"5,6",
        b"1" * 17,
        b"5\x00",
        b"5;" + b"a" * 5000,
    ],
)
def test_bad_chunk_size_lines_are_refused(line: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        check_chunk_size_line(line)
    assert info.value.status_hint == 400


# -- body limit -----------------------------------------------------------------------------------


def test_body_limit() -> None:
    limit = BodyLimit(10)
    limit.declare(10)
    limit.declare(None)
    limit.add(4)
    limit.add(6)
    assert limit.received == 10
    with pytest.raises(RemoteProtocolError) as info:
        limit.add(1)
    assert info.value.status_hint == 413
    with pytest.raises(RemoteProtocolError) as info:
        BodyLimit(10).declare(11)
    assert info.value.status_hint == 413


def test_no_body_limit() -> None:
    limit = BodyLimit(None)
    limit.declare(10**12)
    limit.add(10**12)


# -- properties: arbitrary input raises RemoteProtocolError or nothing ----------------------------

INTERESTING_NAMES = st.sampled_from(
    [b"host", b"content-length", b"transfer-encoding", b"Content-Length", b"Host", b"x-a"]
)
INTERESTING_VALUES = st.sampled_from(
    [b"chunked", b"gzip, chunked", b"5", b"5, 6", b"example.com", b"", b" ", b"\r\n", b"\x00"]
)
NAMES = st.one_of(INTERESTING_NAMES, st.binary(max_size=12))
VALUES = st.one_of(INTERESTING_VALUES, st.binary(max_size=30))


@settings(max_examples=500)
@given(
    st.one_of(st.sampled_from(["GET", "POST", "CONNECT", "OPTIONS"]), st.text(max_size=8)),
    st.one_of(st.sampled_from(["/", "*", "http://a/", "a:1"]), st.text(max_size=30)),
    st.lists(st.tuples(NAMES, VALUES), max_size=8),
    st.sampled_from(["1.0", "1.1"]),
)
def test_any_head_raises_only_remote_protocol_error(
    method: str, target: str, headers: Headers, version: str
) -> None:
    try:
        check_request_head(method, target, headers, version=version, max_header_bytes=200)
    except RemoteProtocolError as error:
        assert error.status_hint in (400, 414, 431, 501)


@given(st.binary(max_size=200))
def test_any_raw_head_raises_only_remote_protocol_error(raw: bytes) -> None:
    try:
        check_raw_head(raw)
    except RemoteProtocolError as error:
        assert error.status_hint == 400


@given(st.one_of(st.binary(max_size=40), st.from_regex(rb"\A[0-9a-fA-F]{1,20}(;[a-z]+)?\Z")))
def test_any_chunk_line_raises_only_remote_protocol_error(line: bytes) -> None:
    try:
        size = check_chunk_size_line(line)
    except RemoteProtocolError as error:
        assert error.status_hint == 400
    else:
        assert 0 <= size < 2**64


# -- with a real parser in front ------------------------------------------------------------------

SMUGGLING_RAW = [
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\n",
]


class _Collector:
    def __init__(self) -> None:
        self.headers: Headers = []
        self.url = b""
        self.done = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.done = True


@pytest.mark.parametrize("raw", SMUGGLING_RAW)
def test_what_httptools_lets_through_is_caught(raw: bytes) -> None:
    """Whatever llhttp accepts from this list (today: two Hosts, no Host), the adapter's
    checks still refuse."""
    httptools = pytest.importorskip("httptools")
    collector = _Collector()
    parser = httptools.HttpRequestParser(collector)
    try:
        parser.feed_data(raw)
    except httptools.HttpParserError:
        return  # the parser refused it first
    assert collector.done
    with pytest.raises(RemoteProtocolError):
        check_raw_head(raw)
        check_request_head(
            parser.get_method().decode(),
            collector.url.decode("latin-1"),
            collector.headers,
            version=parser.get_http_version(),
        )


# -- the error page a refused request gets (l7.errors_page) ---------------------------------------


def h11_client_reads(response: Response, body: bytes, method: str = "GET") -> list[object]:
    """Serialize with an h11 server, parse with an h11 client: both must accept it."""
    server = h11.Connection(h11.SERVER)
    server.receive_data(f"{method} / HTTP/1.1\r\nHost: a\r\n\r\n".encode())
    assert isinstance(server.next_event(), h11.Request)
    wire = server.send(
        h11.Response(status_code=response.status, headers=response.headers, reason=response.reason)
    )
    if method != "HEAD":
        wire += server.send(h11.Data(data=body))
    wire += server.send(h11.EndOfMessage())

    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method=method, target="/", headers=[("Host", "a")]))
    client.send(h11.EndOfMessage())
    client.receive_data(wire)
    events: list[object] = []
    while True:
        event = client.next_event()
        if event is h11.NEED_DATA:
            break
        events.append(event)
        if isinstance(event, h11.EndOfMessage):
            break
    return events


def test_error_page_for_a_refused_request_is_valid_http() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        check_request_head("POST", "/", [HOST, (b"transfer-encoding", b"gzip, chunked")])
    response, body = error_response(info.value.status_hint, "abc123", str(info.value), close=True)
    head, data, end = h11_client_reads(response, body)
    assert isinstance(head, h11.Response)
    assert (head.status_code, head.reason) == (501, b"Not Implemented")
    assert dict(head.headers) == {
        b"content-type": b"text/plain; charset=utf-8",
        b"content-length": str(len(body)).encode(),
        b"x-content-type-options": b"nosniff",
        b"cache-control": b"no-store",
        b"x-request-id": b"abc123",
        b"connection": b"close",
    }
    assert isinstance(data, h11.Data)
    assert data.data == (
        b"501 Not Implemented\ntransfer codings other than chunked\nrequest id: abc123\n"
    )
    assert isinstance(end, h11.EndOfMessage)


@pytest.mark.parametrize("status", [400, 403, 404, 408, 413, 414, 429, 431, 500, 502, 503, 504])
def test_error_pages_parse(status: int) -> None:
    response, body = error_response(status, "rid-1", retry_after=3 if status == 503 else None)
    head, data, _ = h11_client_reads(response, body)
    assert head.status_code == status  # type: ignore[attr-defined]
    assert data.data == body  # type: ignore[attr-defined]
    assert body.startswith(f"{status} {HTTPStatus(status).phrase}\n".encode())
    assert body.endswith(b"request id: rid-1\n")
    assert (b"connection", b"close") not in response.headers
    assert ((b"retry-after", b"3") in response.headers) == (status == 503)


def test_error_page_head_request() -> None:
    response, body = error_response(404, "r")
    (head, end) = h11_client_reads(response, body, method="HEAD")
    assert head.status_code == 404  # type: ignore[attr-defined]
    assert isinstance(end, h11.EndOfMessage)


def test_error_page_unregistered_status_and_utf8_message() -> None:
    response, body = error_response(499, "r", "client went away — sorry\n")
    assert response.reason == b"Error"
    assert body.decode("utf-8") == "499 Error\nclient went away — sorry\nrequest id: r\n"
    assert h11_client_reads(response, body)[1].data == body  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("status", "request_id"), [(200, "r"), (302, "r"), (600, "r"), (400, ""), (400, "a\r\nb")]
)
def test_error_page_misuse(status: int, request_id: str) -> None:
    with pytest.raises(LocalProtocolError):
        error_response(status, request_id)


def test_non_ascii_target_bytes_are_not_whitespace() -> None:
    # Bytes 0x80-0xff (as latin-1) are not whitespace or controls in RFC 9112's sense, even
    # those str.isprintable() calls unprintable (0x85, 0xa0): the fast path defers to the rule.
    assert status_of([HOST], "GET", "/caf\xe9\x85\xa0") is None
