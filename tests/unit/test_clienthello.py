"""ClientHelloReader on real hellos from the standard library's ssl module and on crafted ones."""

from __future__ import annotations

import functools
import ssl
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from l4lb.tls.clienthello import (
    NEED_DATA,
    BadClientHello,
    ClientHello,
    ClientHelloReader,
    NotTLS,
    is_grease,
)

# -- building hellos -----------------------------------------------------------------------------


@functools.cache
def ssl_flight(
    server_hostname: str | None,
    alpn: tuple[str, ...] = (),
    max_version: ssl.TLSVersion | None = None,
) -> bytes:
    """The client's first flight, as the stdlib ssl module (OpenSSL) writes it."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    if max_version is not None:
        ctx.maximum_version = max_version
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = ctx.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    return outgoing.read()


def handshake_of(flight: bytes) -> bytes:
    """Concatenate the fragments of the handshake records in a flight."""
    out, pos = bytearray(), 0
    while pos < len(flight):
        content_type, _, length = struct.unpack_from("!BHH", flight, pos)
        assert content_type == 22
        out += flight[pos + 5 : pos + 5 + length]
        pos += 5 + length
    return bytes(out)


def as_records(handshake: bytes, sizes: list[int] | None = None) -> bytes:
    """Wrap handshake bytes in records whose fragments have the given sizes (cycled)."""
    sizes = sizes or [1 << 14]
    out, pos, i = bytearray(), 0, 0
    while pos < len(handshake):
        chunk = handshake[pos : pos + max(1, sizes[i % len(sizes)])]
        out += struct.pack("!BHH", 22, 0x0301, len(chunk)) + chunk
        pos += len(chunk)
        i += 1
    return bytes(out)


def u8v(data: bytes) -> bytes:
    return bytes([len(data)]) + data


def u16v(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


def ext(ext_type: int, data: bytes) -> bytes:
    return struct.pack("!H", ext_type) + u16v(data)


def sni_ext(*names: bytes) -> bytes:
    return ext(0, u16v(b"".join(b"\x00" + u16v(n) for n in names)))


def alpn_ext(*names: bytes) -> bytes:
    return ext(16, u16v(b"".join(u8v(n) for n in names)))


def versions_ext(*versions: int) -> bytes:
    return ext(43, u8v(b"".join(struct.pack("!H", v) for v in versions)))


def key_share_ext(*shares: tuple[int, int]) -> bytes:
    """key_share (RFC 8446 §4.2.8) with (group, key length) entries filled with 0x42."""
    entries = b"".join(struct.pack("!H", g) + u16v(b"\x42" * n) for g, n in shares)
    return ext(51, u16v(entries))


def hello_body(
    extensions: list[bytes] | None,
    *,
    legacy_version: int = 0x0303,
    session_id: bytes = b"\x11" * 32,
    suites: tuple[int, ...] = (0x1301, 0x1302, 0xC02F),
) -> bytes:
    body = struct.pack("!H", legacy_version) + b"\x07" * 32 + u8v(session_id)
    body += u16v(b"".join(struct.pack("!H", s) for s in suites)) + u8v(b"\x00")
    if extensions is not None:
        body += u16v(b"".join(extensions))
    return body


def handshake(body: bytes, msg_type: int = 1) -> bytes:
    return bytes([msg_type]) + len(body).to_bytes(3, "big") + body


GREASE_A, GREASE_B = 0x0A0A, 0x3A3A

# A Chrome-like hello: GREASE everywhere, X25519MLKEM768 (0x11ec, 1,216-byte share) + X25519.
LARGE_BODY = hello_body(
    [
        ext(GREASE_A, b""),
        sni_ext(b"pq.example.net"),
        ext(23, b""),  # extended_master_secret
        ext(35, b"\x5a" * 192),  # session_ticket, resuming
        ext(
            13,
            u16v(
                struct.pack("!8H", 0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601)
            ),
        ),
        ext(45, b"\x01\x01"),  # psk_key_exchange_modes
        alpn_ext(b"\x1a\x1a", b"h2", b"http/1.1"),
        versions_ext(GREASE_B, 0x0304, 0x0303),
        ext(10, u16v(struct.pack("!HHHH", GREASE_B, 0x11EC, 0x001D, 0x0017))),
        key_share_ext((GREASE_B, 1), (0x11EC, 1216), (0x001D, 32)),
        ext(0x2A2A, b"\x00"),
    ],
    suites=(GREASE_A, 0x1301, 0x1302, 0x1303, 0xC02B),
)
LARGE_FLIGHT = as_records(handshake(LARGE_BODY))


def read(data: bytes, chunks: list[int] | None = None) -> ClientHello | object:
    """Feed `data` whole, or cut at the given sizes, and return the reader's event."""
    reader = ClientHelloReader()
    if chunks is None:
        reader.feed(data)
    else:
        pos = 0
        for size in chunks:
            reader.feed(data[pos : pos + size])
            pos += size
        reader.feed(data[pos:])
    return reader.next_event()


# -- real hellos from ssl ------------------------------------------------------------------------

REAL_CASES = [
    pytest.param(("example.com", ("h2", "http/1.1"), None), id="tls13-alpn"),
    pytest.param(("example.com", (), None), id="tls13"),
    pytest.param(("api.example.com", ("h2",), ssl.TLSVersion.TLSv1_2), id="tls12-alpn"),
    pytest.param(("api.example.com", (), ssl.TLSVersion.TLSv1_2), id="tls12"),
]


@pytest.mark.parametrize("case", REAL_CASES)
def test_real_hello_whole(case: tuple) -> None:
    name, alpn, max_version = case
    flight = ssl_flight(name, alpn, max_version)
    hello = read(flight)
    assert isinstance(hello, ClientHello)
    assert hello.sni == name
    assert hello.alpn == alpn
    assert hello.legacy_version == 0x0303
    assert hello.has_ech is False
    assert hello.length == len(flight)
    if max_version is ssl.TLSVersion.TLSv1_2:
        assert 0x0304 not in hello.versions
    else:
        assert hello.versions[0] == 0x0304
        assert 0x0303 in hello.versions


@pytest.mark.parametrize("case", REAL_CASES)
def test_real_hello_byte_by_byte(case: tuple) -> None:
    flight = ssl_flight(*case)
    reader = ClientHelloReader()
    for i in range(len(flight)):
        assert reader.next_event() is NEED_DATA
        reader.feed(flight[i : i + 1])
    assert reader.next_event() == read(flight)


@pytest.mark.parametrize("sizes", [[1], [3, 500], [100], [4, 1, 7, 4096], [37]])
def test_real_hello_refragmented_into_records(sizes: list[int]) -> None:
    flight = ssl_flight("example.com", ("h2", "http/1.1"), None)
    wire = as_records(handshake_of(flight), sizes)
    assert wire != flight
    hello = read(wire, chunks=[2, 9, 30])
    assert isinstance(hello, ClientHello)
    assert hello.sni == "example.com"
    assert hello.alpn == ("h2", "http/1.1")
    assert hello.length == len(wire)


def test_real_hello_name_is_lowercased_and_trailing_dot_stripped() -> None:
    hello = read(ssl_flight("Example.COM."))
    assert isinstance(hello, ClientHello)
    assert hello.sni == "example.com"


def test_real_hello_without_sni() -> None:
    hello = read(ssl_flight(None))
    assert isinstance(hello, ClientHello)
    assert hello.sni is None


@pytest.mark.parametrize("flight", [ssl_flight("example.com", ("h2",)), LARGE_FLIGHT])
def test_every_truncation_needs_data(flight: bytes) -> None:
    for n in range(len(flight)):
        reader = ClientHelloReader()
        reader.feed(flight[:n])
        assert reader.next_event() is NEED_DATA, n


def test_bytes_after_the_hello_are_ignored() -> None:
    flight = ssl_flight("example.com")
    early = b"\x14\x03\x03\x00\x01\x01" + b"\x17\x03\x03\x00\x05hello"  # CCS + early data
    reader = ClientHelloReader()
    reader.feed(flight + early[:3])
    reader.feed(early[3:])
    reader.feed(b"\xff" * 100)
    hello = reader.next_event()
    assert isinstance(hello, ClientHello)
    assert hello.length == len(flight)
    assert reader.next_event() is hello


# -- crafted hellos ------------------------------------------------------------------------------


def test_large_post_quantum_hello_with_grease() -> None:
    assert len(LARGE_FLIGHT) > 1500
    for wire in (LARGE_FLIGHT, as_records(handshake(LARGE_BODY), [1000])):
        hello = read(wire, chunks=[1, 1, 1, 1, 1, 1460])
        assert hello == ClientHello(
            sni="pq.example.net",
            alpn=("h2", "http/1.1"),
            versions=(0x0304, 0x0303),
            legacy_version=0x0303,
            has_ech=False,
            length=len(wire),
        )


def test_ech_extension_routes_on_outer_sni() -> None:
    ech = ext(0xFE0D, b"\x00" + b"\x00\x01\x00\x01" + b"\x2a" + u16v(b"\x01" * 32) + u16v(b"x"))
    body = hello_body([sni_ext(b"public.example.org"), versions_ext(0x0304), ech])
    hello = read(as_records(handshake(body)))
    assert isinstance(hello, ClientHello)
    assert hello.has_ech is True
    assert hello.sni == "public.example.org"


def test_hello_without_extensions() -> None:
    hello = read(as_records(handshake(hello_body(None))))
    assert isinstance(hello, ClientHello)
    assert (hello.sni, hello.alpn, hello.versions, hello.has_ech) == (None, (), (), False)


@pytest.mark.parametrize("name", [b"a-b_c.example", b"x", b"123.example.com", b"EXAMPLE.org."])
def test_valid_names(name: bytes) -> None:
    hello = read(as_records(handshake(hello_body([sni_ext(name)]))))
    assert isinstance(hello, ClientHello)
    assert hello.sni == name.decode().lower().rstrip(".")


@pytest.mark.parametrize("value", [0x0A0A, 0x1A1A, 0xFAFA])
def test_grease_values(value: int) -> None:
    assert is_grease(value)


@pytest.mark.parametrize("value", [0x0A1A, 0x0303, 0xFE0D, 0x0A0B])
def test_not_grease_values(value: int) -> None:
    assert not is_grease(value)


# -- not TLS, decided on the first bytes ---------------------------------------------------------


@pytest.mark.parametrize(
    "first",
    [
        b"G",  # GET / HTTP/1.1
        b"\x80",  # SSLv2-compatible hello: 2-byte header with the high bit set
        b"\x17",  # application data first
        b"\x16\x02",  # not TLS major version
        b"\x16\x00",
        b"SSH-2.0-OpenSSH",
    ],
)
def test_not_tls_is_reported_at_once(first: bytes) -> None:
    reader = ClientHelloReader()
    reader.feed(first)
    with pytest.raises(NotTLS):
        reader.next_event()
    reader.feed(b"more bytes")
    with pytest.raises(NotTLS):
        reader.next_event()


def test_http_request_is_not_tls() -> None:
    with pytest.raises(NotTLS, match="0x47"):
        read(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")


# -- broken hellos -------------------------------------------------------------------------------

GOOD_BODY = hello_body([sni_ext(b"example.com"), versions_ext(0x0304)])


def with_body_change(old: bytes, new: bytes) -> bytes:
    assert old in GOOD_BODY
    return as_records(handshake(GOOD_BODY.replace(old, new)))


BAD_WIRES = {
    "empty record": b"\x16\x03\x01\x00\x00",
    "record too long": b"\x16\x03\x01\x40\x01",
    "record minor version": b"\x16\x03\x09",
    "server hello": b"\x16\x03\x01\x00\x01\x02",
    "handshake too large": b"\x16\x03\x01\x00\x04\x01\x00\x40\x01",
    "handshake too short": b"\x16\x03\x01\x00\x04\x01\x00\x00\x05",
    "alert inside hello": as_records(handshake(GOOD_BODY), [10])[:15]
    + b"\x15\x03\x03\x00\x02\x02(",
    "second record not TLS": as_records(handshake(GOOD_BODY), [10])[:15] + b"\x16\x07",
    "legacy_version": with_body_change(b"\x03\x03\x07\x07", b"\x02\x00\x07\x07"),
    "session id too long": as_records(handshake(hello_body(None, session_id=b"\x00" * 33))),
    "odd cipher suites": as_records(
        handshake(GOOD_BODY.replace(b"\x00\x06\x13\x01", b"\x00\x05\x13\x01"))
    ),
    "extensions overrun": as_records(handshake(GOOD_BODY[:-1])),
    "trailing bytes": as_records(handshake(GOOD_BODY + b"\x00")),
    "duplicate extension": as_records(
        handshake(hello_body([sni_ext(b"a.example"), sni_ext(b"b.example")]))
    ),
    "two host names": as_records(handshake(hello_body([sni_ext(b"a.example", b"b.example")]))),
    "empty server_name list": as_records(handshake(hello_body([ext(0, b"")]))),
    "IP literal name": with_body_change(b"\x0bexample.com", b"\x0b192.168.0.1"),
    "empty label": with_body_change(b"\x0bexample.com", b"\x0bexample..om"),
    "non-ASCII name": with_body_change(b"\x0bexample.com", b"\x0bex\xc3\xa9mple.co"),
    "bad character": with_body_change(b"\x0bexample.com", b"\x0bexample/com"),
    "label starts with dash": with_body_change(b"\x0bexample.com", b"\x0b-xample.com"),
    "label too long": as_records(handshake(hello_body([sni_ext(b"a" * 64 + b".example")]))),
    "name too long": as_records(handshake(hello_body([sni_ext(b"a." * 127 + b"ab")]))),
    "odd supported_versions": as_records(handshake(hello_body([ext(43, b"\x03\x03\x04\x03")]))),
    "empty alpn name": as_records(handshake(hello_body([ext(16, u16v(b"\x00\x02h2"))]))),
}


@pytest.mark.parametrize("wire", list(BAD_WIRES.values()), ids=list(BAD_WIRES))
def test_bad_hello(wire: bytes) -> None:
    with pytest.raises(BadClientHello):
        read(wire)
    reader = ClientHelloReader()  # the same verdict one byte at a time
    for i in range(len(wire)):
        reader.feed(wire[i : i + 1])
    with pytest.raises(BadClientHello):
        reader.next_event()


def test_oversized_hello_rejected_from_its_header() -> None:
    reader = ClientHelloReader(max_size=1024)
    reader.feed(LARGE_FLIGHT[:9])  # record header + handshake header only
    with pytest.raises(BadClientHello, match="limit"):
        reader.next_event()


def test_errors_are_remote_protocol_errors() -> None:
    from l4lb.errors import RemoteProtocolError

    assert issubclass(NotTLS, RemoteProtocolError)
    assert issubclass(BadClientHello, RemoteProtocolError)


# -- properties ----------------------------------------------------------------------------------

VALID_BODIES = [
    handshake_of(ssl_flight("example.com", ("h2", "http/1.1"), None))[4:],
    handshake_of(ssl_flight(None, (), ssl.TLSVersion.TLSv1_2))[4:],
    LARGE_BODY,
    GOOD_BODY,
]


def assert_only_protocol_errors(data: bytes, cuts: list[int]) -> None:
    reader = ClientHelloReader()
    pos = 0
    for cut in [*sorted(cuts), len(data)]:
        reader.feed(data[pos:cut])
        pos = max(pos, cut)
        try:
            event = reader.next_event()
        except (NotTLS, BadClientHello):
            return
        assert event is NEED_DATA or isinstance(event, ClientHello)


@settings(max_examples=300)
@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=8))
def test_arbitrary_bytes_raise_only_protocol_errors(data: bytes, cuts: list[int]) -> None:
    assert_only_protocol_errors(data, cuts)


@settings(max_examples=300)
@given(
    st.sampled_from([b"\x16\x03\x01", b"\x16\x03\x03"]),
    st.binary(max_size=400),
    st.lists(st.integers(0, 400), max_size=8),
)
def test_arbitrary_record_payloads_raise_only_protocol_errors(
    version: bytes, payload: bytes, cuts: list[int]
) -> None:
    """Past the record header, so the handshake and body parsers see the garbage."""
    data = version + struct.pack("!H", len(payload)) + payload
    assert_only_protocol_errors(data, cuts)


@settings(max_examples=300)
@given(
    st.sampled_from(VALID_BODIES),
    st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), min_size=1, max_size=4),
    st.lists(st.integers(0, 4000), max_size=6),
)
def test_corrupted_hellos_raise_only_protocol_errors(
    body: bytes, changes: list[tuple[int, int]], cuts: list[int]
) -> None:
    """Flip bytes inside real hellos: every length field and list gets hit this way."""
    mutated = bytearray(body)
    for pos, value in changes:
        mutated[pos % len(mutated)] = value
    assert_only_protocol_errors(as_records(handshake(bytes(mutated))), cuts)


@settings(max_examples=200)
@given(
    st.sampled_from(VALID_BODIES),
    st.lists(st.integers(1, 2000), min_size=1, max_size=6),
    st.lists(st.integers(0, 3000), max_size=10),
)
def test_fragmentation_invariance(body: bytes, record_sizes: list[int], cuts: list[int]) -> None:
    """However the hello is cut into records and TCP segments, the reader sees the same."""
    msg = handshake(body)
    expected = read(as_records(msg))
    assert isinstance(expected, ClientHello)
    wire = as_records(msg, record_sizes)
    reader = ClientHelloReader()
    pos = 0
    for cut in sorted(c for c in cuts if c < len(wire)):
        reader.feed(wire[pos:cut])
        pos = cut
        assert reader.next_event() is NEED_DATA
    reader.feed(wire[pos:])
    hello = reader.next_event()
    assert isinstance(hello, ClientHello)
    assert hello.length == len(wire)
    assert hello == ClientHello(**{**_fields(expected), "length": len(wire)})


def _fields(hello: ClientHello) -> dict:
    return {name: getattr(hello, name) for name in ClientHello.__slots__}
