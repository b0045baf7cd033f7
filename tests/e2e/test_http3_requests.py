"""HTTP/3 requests that RFC 9114 §4.2-4.3 makes malformed, sent by the aioquic client
(tests/e2e/h3client.py) to an `https` listener with `http3 = true`: refused, never
forwarded, and another client's connection served meanwhile and afterwards; the same list
as HTTP/2's (test_http2.py); how :authority and Host are read; streams in flight at shutdown."""

from __future__ import annotations

import json
import signal
import time

import pytest

from tests.e2e.h3client import H3Client
from tests.e2e.helpers import free_port, pool_toml
from tests.e2e.test_http2 import MALFORMED, MALFORMED_IDS, cert, https, servers  # noqa: F401

H3_MESSAGE_ERROR = 0x10E


def raw(fields: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(n.encode(), v.encode()) for n, v in fields]


def send(client: H3Client, fields, body: bytes = b"") -> dict:
    """Send a request head as given (aioquic does not check what it sends); what came back."""
    assert client.h3 is not None
    sid = client.quic.get_next_available_stream_id()
    client.h3.send_headers(sid, raw(fields), end_stream=not body)
    if body:
        client.h3.send_data(sid, body, end_stream=True)
    client.flush()
    client.step_until(lambda: client.responses.get(sid, {}).get("done") or client.terminated)
    return client.responses.get(sid) or {"headers": [], "reset": None, "done": False}


class Bystander:
    """A connection that asked before the bad request and asks again after it; then a new one."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.client = H3Client(port, server_name="example.com")
        assert self.client.request("GET", "/", authority="example.com")[0] == 200

    def check(self) -> None:
        status, _, body = self.client.request("GET", "/bytes/100", authority="example.com")
        assert (status, body) == (200, b"b" * 100)
        self.client.close()
        fresh = H3Client(self.port, server_name="example.com")
        try:
            assert fresh.request("GET", "/", authority="example.com")[0] == 200
        finally:
            fresh.close()


def start(proxy, cert, backend) -> int:  # noqa: F811
    port = free_port()
    proxy(https(port, cert) + pool_toml("p", servers(backend)))
    return port


@pytest.mark.parametrize("fields", MALFORMED, ids=MALFORMED_IDS)
def test_malformed_requests_are_refused_and_not_forwarded(fields, cert, proxy, http_backends):  # noqa: F811
    (a,) = http_backends("a")
    port = start(proxy, cert, a)
    other = Bystander(port)
    client = H3Client(port, server_name="example.com")
    try:
        r = send(client, fields)
        # A stream error, or (aioquic's choice, which RFC 9114 §8 allows) the connection's.
        closed = client.terminated is not None and client.terminated.error_code == H3_MESSAGE_ERROR
        assert closed or r["reset"] == H3_MESSAGE_ERROR, (r, client.terminated)
        assert not r["headers"]  # no response
    finally:
        client.close()
    other.check()
    assert a.requests == 3  # the bystander's only


@pytest.fixture
def raw_backend():
    from tests.e2e.httpbackend import RawBackend

    raw = RawBackend()
    yield raw
    raw.close()


@pytest.mark.parametrize("sent", [5, 20])
def test_content_length_that_disagrees_with_data(sent, cert, proxy, raw_backend):  # noqa: F811
    """A body shorter or longer than its content-length, ending the stream: the request is
    malformed (RFC 9114 §4.1.2) and no complete request reaches the server."""
    port = start(proxy, cert, raw_backend)
    client = H3Client(port, server_name="example.com")
    try:
        head = [(":method", "POST"), (":scheme", "https"), (":authority", "x"), (":path", "/"),
                ("content-length", "10")]  # fmt: skip
        r = send(client, head, b"x" * sent)
        closed = client.terminated is not None and client.terminated.error_code == H3_MESSAGE_ERROR
        assert closed or r["reset"] == H3_MESSAGE_ERROR, (r, client.terminated)
        assert not r["headers"]
    finally:
        client.close()
    time.sleep(0.3)
    assert raw_backend.heads == []  # no complete request reached the server
    after = H3Client(port, server_name="example.com")
    try:
        fields = [(b"content-length", b"10")]
        assert after.request("POST", "/", authority="x", headers=fields, body=b"y" * 10)[2] == b"ok"
    finally:
        after.close()
    assert len(raw_backend.heads) == 1


def test_body_longer_than_content_length_is_never_forwarded(cert, proxy, raw_backend):  # noqa: F811
    """DATA past the declared content-length, before the stream ends (the client never ends
    it): the request is malformed as soon as the excess arrives (RFC 9114 §4.1.2), and the
    excess must never reach the HTTP/1.1 server, where it would be a request of its own."""
    port = start(proxy, cert, raw_backend)
    client = H3Client(port, server_name="example.com")
    try:
        assert client.h3 is not None
        sid = client.quic.get_next_available_stream_id()
        head = [(":method", "POST"), (":scheme", "https"), (":authority", "x"), (":path", "/"),
                ("content-length", "10")]  # fmt: skip
        client.h3.send_headers(sid, raw(head))
        client.h3.send_data(sid, b"a" * 6, end_stream=False)
        client.step_until(lambda: b"a" * 6 in raw_backend.data(), timeout=5)
        smuggled = b"aaaaGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"  # 4 bytes end the body
        client.h3.send_data(sid, smuggled, end_stream=False)
        client.flush()
        client.step_until(lambda: client.terminated is not None or sid in client.responses, 2)
    finally:
        client.close()
    time.sleep(0.3)
    assert b"/smuggled" not in raw_backend.data(), raw_backend.heads
    assert raw_backend.heads == []


def test_authority_and_host_must_agree(cert, proxy, http_backends):  # noqa: F811
    """RFC 9114 §4.3.1: a Host that differs from :authority makes the request malformed;
    l4lb answers 400 and forwards nothing. The same Host is fine."""
    (a,) = http_backends("a")
    port = start(proxy, cert, a)
    client = H3Client(port, server_name="example.com")
    try:
        sid = client.send("GET", "/headers", authority="a.test", headers=[(b"host", b"b.test")])
        assert client.response(sid)[0] == 400 and a.requests == 0
        sid = client.send("GET", "/headers", authority="a.test", headers=[(b"host", b"a.test")])
        status, _, body = client.response(sid)
        assert status == 200
        assert [v for n, v in json.loads(body)["headers"] if n == "host"] == ["a.test"]
    finally:
        client.close()


def test_host_stands_in_for_a_missing_authority(cert, proxy, http_backends):  # noqa: F811
    """RFC 9114 §4.3.1: a request may carry Host instead of :authority. aioquic alone would
    close the connection (H3_MESSAGE_ERROR); l4lb's ServerH3 reads Host as the authority,
    forwards it once, and a second, different Host is still a 400 on a live connection."""
    (a,) = http_backends("a")
    port = start(proxy, cert, a)
    client = H3Client(port, server_name="example.com")
    try:
        pseudo = [(":method", "GET"), (":scheme", "https"), (":path", "/headers"),
                  ("host", "c.test")]  # fmt: skip
        r = send(client, pseudo)
        assert client.terminated is None and r["reset"] is None, (r, client.terminated)
        fields = dict(r["headers"])
        assert fields[b":status"] == b"200"
        seen = json.loads(b"".join(r["body"]))["headers"]
        assert [v for n, v in seen if n == "host"] == ["c.test"]
        r = send(client, [*pseudo, ("host", "d.test")])
        assert client.terminated is None and dict(r["headers"])[b":status"] == b"400", r
    finally:
        client.close()


# -- shutdown ---------------------------------------------------------------------------------


def shutdown_during(proxy, cert, backend, seconds: float):  # noqa: F811
    """SIGTERM while a request that takes `seconds` is in flight: (status, body, exit code)."""
    port = free_port()
    p = proxy(https(port, cert) + pool_toml("p", servers(backend)))
    client = H3Client(port, server_name="example.com")
    try:
        sid = client.send("GET", f"/slow/{seconds}", authority="example.com")
        assert client.step_until(lambda: backend.requests == 1, timeout=5)
        p.proc.send_signal(signal.SIGTERM)
        client.step_until(lambda: client.responses.get(sid, {}).get("done") or client.terminated,
                          timeout=seconds + 10)  # fmt: skip
        r = client.responses.get(sid, {})
        status = dict(r.get("headers", [])).get(b":status")
        return status, b"".join(r.get("body", [])), p.proc.wait(10)
    finally:
        client.close()


def test_shutdown_lets_a_short_stream_finish(cert, proxy, http_backends):  # noqa: F811
    (a,) = http_backends("a")
    assert shutdown_during(proxy, cert, a, 0.5) == (b"200", b"a\n", 0)


def test_shutdown_lets_a_stream_finish_within_drain_timeout(cert, proxy, http_backends):  # noqa: F811
    (a,) = http_backends("a")
    assert shutdown_during(proxy, cert, a, 2.5) == (b"200", b"a\n", 0)


# -- a QPACK bomb -------------------------------------------------------------------------------


def prefixed_int(value: int, bits: int, first: int = 0) -> bytes:
    """An integer with an N-bit prefix (RFC 7541 §5.1, as QPACK uses it)."""
    top = (1 << bits) - 1
    if value < top:
        return bytes([first | value])
    out = [first | top]
    value -= top
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes([*out, value])


def peak_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def test_qpack_bomb_is_stopped_before_it_is_decoded(cert, proxy, http_backends):  # noqa: F811
    from aioquic.buffer import encode_uint_var

    (a,) = http_backends("a")
    port = free_port()
    p = proxy(https(port, cert, http="max_header_bytes = 8192\n") + pool_toml("p", servers(a)))
    client = H3Client(port, server_name="example.com")
    before = peak_kb(p.proc.pid)
    try:
        assert client.h3 is not None
        assert client.step_until(lambda: client.h3._local_encoder_stream_id is not None, 5)
        # Encoder stream: table capacity 4096 (what l4lb allows), insert x-bomb: 4000 bytes.
        name, value = b"x-bomb", b"a" * 4000
        insert = prefixed_int(4096, 5, 0x20) + prefixed_int(len(name), 3, 0x40) + name
        insert += prefixed_int(len(value), 7) + value
        client.quic.send_stream_data(client.h3._local_encoder_stream_id, insert)
        # A header section: Required Insert Count 1, Base 1, :method GET, :scheme https,
        # :path /, :authority x (static table), then the dynamic entry, one byte each time.
        block = bytes([2, 0, 0xD1, 0xD7, 0xC1, 0x50, 0x01]) + b"x" + b"\x80" * 20_000
        sid = client.quic.get_next_available_stream_id()
        frame = encode_uint_var(1) + encode_uint_var(len(block)) + block  # HEADERS
        client.quic.send_stream_data(sid, frame, end_stream=True)
        client.flush()
        # (The client may end itself: its encoder did not make the insert l4lb acknowledges.)
        client.step_until(lambda: client.responses.get(sid, {}).get("done") or client.terminated)
        time.sleep(0.5)
    finally:
        client.close()
    grown = peak_kb(p.proc.pid) - before
    assert a.requests == 0
    assert grown < 30_000, f"l4lb's peak memory grew by {grown} KB for one request"
    other = H3Client(port, server_name="example.com")
    try:
        assert other.request("GET", "/", authority="example.com")[0] == 200
    finally:
        other.close()
