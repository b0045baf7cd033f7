"""PROXY protocol v1/v2: known answers, round trips, splitting, malformed headers."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from l4lb.errors import LocalProtocolError, RemoteProtocolError
from l4lb.proxyproto import (
    MAX_V1_LENGTH,
    NEED_DATA,
    V2_SIGNATURE,
    BadProxyHeader,
    ProxyHeader,
    ProxyHeaderReader,
    encode_v1,
    encode_v2,
)

PAYLOAD = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"

# Captured from HAProxy's send-proxy-v2 (seriousben/experiment-proxy-protocol README).
HAPROXY_V2 = bytes.fromhex("0d0a0d0a000d0a515549540a2111000cac130001ac130003a6520050")


def read(data: bytes, chunks: list[int] | None = None) -> tuple[ProxyHeader | object, bytes]:
    reader = ProxyHeaderReader()
    pos = 0
    for size in chunks or []:
        reader.feed(data[pos : pos + size])
        pos += size
    reader.feed(data[pos:])
    event = reader.next_event()
    return event, reader.rest() if isinstance(event, ProxyHeader) else b""


def v2(ver_cmd: int, fam: int, block: bytes) -> bytes:
    return V2_SIGNATURE + struct.pack("!BBH", ver_cmd, fam, len(block)) + block


def tlv(kind: int, value: bytes) -> bytes:
    return struct.pack("!BH", kind, len(value)) + value


V4 = (("192.168.0.1", 56324), ("192.168.0.11", 443))
V6 = (("2001:db8::1", 40000), ("2001:db8:0:1::ff", 8443))


# -- known answers -------------------------------------------------------------------------------


def test_encode_v1_matches_the_spec_example() -> None:
    assert encode_v1(*V4) == b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"


def test_encode_v1_ipv6() -> None:
    assert encode_v1(*V6) == b"PROXY TCP6 2001:db8::1 2001:db8:0:1::ff 40000 8443\r\n"


def test_encode_v2_matches_haproxy() -> None:
    assert encode_v2(("172.19.0.1", 42578), ("172.19.0.3", 80)) == HAPROXY_V2


def test_read_haproxy_v2() -> None:
    header, rest = read(HAPROXY_V2 + PAYLOAD)
    assert header == ProxyHeader(2, ("172.19.0.1", 42578), ("172.19.0.3", 80), 28)
    assert rest == PAYLOAD


def test_encode_v2_local() -> None:
    wire = encode_v2(None, None, local=True)
    assert wire == V2_SIGNATURE + b"\x20\x00\x00\x00"
    assert read(wire)[0] == ProxyHeader(2, None, None, 16)


def test_encode_v1_unknown() -> None:
    assert encode_v1(None, None) == b"PROXY UNKNOWN\r\n"
    assert read(b"PROXY UNKNOWN\r\n")[0] == ProxyHeader(1, None, None, 15)


def test_encode_mixed_families_maps_ipv4_into_ipv6() -> None:
    wire = encode_v1(("10.0.0.1", 1), ("2001:db8::2", 2))
    assert wire == b"PROXY TCP6 ::ffff:a00:1 2001:db8::2 1 2\r\n"
    header, _ = read(encode_v2(("10.0.0.1", 1), ("2001:db8::2", 2)))
    assert isinstance(header, ProxyHeader)
    assert ipaddress.ip_address(header.src[0]).ipv4_mapped == ipaddress.ip_address("10.0.0.1")


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        (("not-an-ip", 1), ("10.0.0.1", 2)),
        (("10.0.0.1", 65536), ("10.0.0.1", 2)),
        (("10.0.0.1", -1), ("10.0.0.1", 2)),
        (("10.0.0.1", 1), None),
    ],
)
def test_encode_rejects_what_it_cannot_write(src: tuple, dst: tuple | None) -> None:
    with pytest.raises(LocalProtocolError):
        encode_v1(src, dst)
    with pytest.raises(LocalProtocolError):
        encode_v2(src, dst)


def test_encode_drops_ipv6_zone() -> None:
    assert encode_v1(("fe80::1%eth0", 1), ("fe80::2", 2)) == b"PROXY TCP6 fe80::1 fe80::2 1 2\r\n"


# -- round trips, split anywhere -----------------------------------------------------------------

HEADERS = {
    "v1-ipv4": (encode_v1(*V4), ProxyHeader(1, *V4, 47)),
    "v1-ipv6": (encode_v1(*V6), ProxyHeader(1, *V6, 52)),
    "v1-unknown": (encode_v1(None, None), ProxyHeader(1, None, None, 15)),
    "v2-ipv4": (encode_v2(*V4), ProxyHeader(2, *V4, 28)),
    "v2-ipv6": (encode_v2(*V6), ProxyHeader(2, *V6, 52)),
    "v2-local": (encode_v2(*V4, local=True), ProxyHeader(2, None, None, 16)),
}


@pytest.mark.parametrize(("wire", "expected"), list(HEADERS.values()), ids=list(HEADERS))
def test_header_then_payload_split_at_every_offset(wire: bytes, expected: ProxyHeader) -> None:
    data = wire + PAYLOAD
    for cut in range(len(data) + 1):
        reader = ProxyHeaderReader()
        reader.feed(data[:cut])
        if cut < len(wire):
            assert reader.next_event() is NEED_DATA
            with pytest.raises(LocalProtocolError):
                reader.rest()
        reader.feed(data[cut:])
        assert reader.next_event() == expected
        assert reader.rest() == PAYLOAD


@pytest.mark.parametrize(("wire", "expected"), list(HEADERS.values()), ids=list(HEADERS))
def test_header_byte_by_byte(wire: bytes, expected: ProxyHeader) -> None:
    reader = ProxyHeaderReader()
    for i, byte in enumerate(wire + PAYLOAD):
        reader.feed(bytes([byte]))
        assert (reader.next_event() is NEED_DATA) == (i < len(wire) - 1)
    assert reader.next_event() == expected
    assert reader.rest() == PAYLOAD


def test_v1_unknown_with_addresses_is_accepted_at_the_maximum_length() -> None:
    f = "ffff:" * 7 + "ffff"
    line = f"PROXY UNKNOWN {f} {f} 65535 65535\r\n".encode()
    assert len(line) == MAX_V1_LENGTH
    assert read(line + PAYLOAD) == (ProxyHeader(1, None, None, MAX_V1_LENGTH), PAYLOAD)


def test_v1_longest_tcp6_line() -> None:
    f = "ffff:" * 7 + "fffe"
    line = f"PROXY TCP6 {f} {f} 65535 65535\r\n".encode()
    header, _ = read(line)
    assert header == ProxyHeader(1, (f, 65535), (f, 65535), 104)


def test_v1_uppercase_ipv6_is_canonicalised() -> None:
    header, _ = read(b"PROXY TCP6 2001:DB8::A 2001:db8:0::b 0 65535\r\n")
    assert header == ProxyHeader(1, ("2001:db8::a", 0), ("2001:db8::b", 65535), 46)


def test_v2_with_tlvs() -> None:
    addresses = struct.pack("!4s4sHH", bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), 5, 6)
    tlvs = tlv(0x01, b"h2") + tlv(0x02, b"example.com") + tlv(0x04, b"") + tlv(0xE0, b"x" * 300)
    wire = v2(0x21, 0x11, addresses + tlvs)
    header, rest = read(wire + PAYLOAD, chunks=[13, 3, 20])
    assert header == ProxyHeader(2, ("10.0.0.1", 5), ("10.0.0.2", 6), len(wire))
    assert rest == PAYLOAD


@pytest.mark.parametrize(
    ("fam", "block"),
    [
        (0x00, b""),  # PROXY with AF_UNSPEC
        (0x00, b"anything at all"),
        (0x12, bytes(12)),  # UDP over IPv4: a TCP listener falls back to UNSPEC
        (0x31, bytes(216)),  # UNIX stream
        (0x10, b"xyz"),  # IPv4 with an unspecified transport
    ],
)
def test_v2_families_without_tcp_addresses(fam: int, block: bytes) -> None:
    wire = v2(0x21, fam, block)
    assert read(wire) == (ProxyHeader(2, None, None, len(wire)), b"")


def test_v2_local_skips_its_block() -> None:
    wire = v2(0x20, 0x11, encode_v2(*V4)[16:] + b"\xff\xff")  # even a malformed TLV tail
    assert read(wire + PAYLOAD) == (ProxyHeader(2, None, None, len(wire)), PAYLOAD)


def test_rest_keeps_bytes_fed_after_the_header() -> None:
    reader = ProxyHeaderReader()
    reader.feed(encode_v1(*V4) + b"ab")
    reader.feed(b"cd")
    assert reader.rest() == b"abcd"
    assert reader.next_event() == ProxyHeader(1, *V4, 47)


# -- malformed -----------------------------------------------------------------------------------


@pytest.mark.parametrize("first", [b"G", b"\x16", b"\x00", b"p", b" "])
def test_wrong_first_byte_fails_at_once(first: bytes) -> None:
    reader = ProxyHeaderReader()
    reader.feed(first)
    with pytest.raises(BadProxyHeader):
        reader.next_event()


@pytest.mark.parametrize(
    "prefix",
    [
        b"PROXZ",
        b"PROXY\t",
        b"PROXY TCP5",
        b"PROXY UDP4",
        b"PROXY tcp4",
        b"PROXY UNKNOWNX",
        b"PROXY TCP4 1.2.3.4\n",
        b"PROXY TCP4 1.2.3.4\r ",
        b"PROXY TCP4 1.2.3.4\x00",
        b"\r\n\r\n\x00\r\nQUIT\r",
        b"\r\n\r\n\x01",
        V2_SIGNATURE + b"\x10",  # version 1 in a v2 header
        V2_SIGNATURE + b"\x22",  # command 2
        V2_SIGNATURE + b"\x21\x41",  # family 4
        V2_SIGNATURE + b"\x21\x13",  # transport 3
        V2_SIGNATURE + b"\x21\x11\x00\x0b",  # IPv4 block shorter than 12
        V2_SIGNATURE + b"\x21\x21\x00\x20",  # IPv6 block shorter than 36
        V2_SIGNATURE + b"\x21\x11\x10\x01",  # longer than the reader's bound
    ],
)
def test_malformed_prefix_fails_before_the_rest_arrives(prefix: bytes) -> None:
    reader = ProxyHeaderReader()
    reader.feed(prefix)
    with pytest.raises(BadProxyHeader):
        reader.next_event()
    reader.feed(b" 1.2.3.4 80 80\r\n")
    with pytest.raises(BadProxyHeader):
        reader.next_event()


def test_v1_line_without_crlf_in_107_bytes() -> None:
    reader = ProxyHeaderReader()
    reader.feed(b"PROXY UNKNOWN " + b"x" * (MAX_V1_LENGTH - 15))
    assert reader.next_event() is NEED_DATA  # 106 bytes: the CRLF may still come
    reader.feed(b"x")
    with pytest.raises(BadProxyHeader, match="107"):
        reader.next_event()


def test_v1_line_of_106_bytes_and_a_cr_waits_for_lf() -> None:
    reader = ProxyHeaderReader()
    reader.feed(b"PROXY UNKNOWN " + b"x" * (MAX_V1_LENGTH - 16) + b"\r")
    assert reader.next_event() is NEED_DATA
    reader.feed(b"\n")
    assert reader.next_event() == ProxyHeader(1, None, None, MAX_V1_LENGTH)


@pytest.mark.parametrize(
    "line",
    [
        b"PROXY TCP4 1.2.3 5.6.7.8 1 2",
        b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2",  # heading zero (§2.1)
        b"PROXY TCP4 256.2.3.4 5.6.7.8 1 2",
        b"PROXY TCP4 ::1 5.6.7.8 1 2",  # family mismatch
        b"PROXY TCP6 1.2.3.4 ::1 1 2",
        b"PROXY TCP6 fe80::1%eth0 ::1 1 2",  # zone ids are not addresses
        b"PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 080 2",  # heading zero
        b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3",
        b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 ",
        b"PROXY TCP4",
        b"PROXY ",
    ],
)
def test_v1_bad_line(line: bytes) -> None:
    with pytest.raises(BadProxyHeader):
        read(line + b"\r\n")


def test_v2_tlv_overrunning_the_header() -> None:
    block = encode_v2(*V4)[16:] + struct.pack("!BH", 0x02, 10) + b"short"
    with pytest.raises(BadProxyHeader, match="TLV"):
        read(v2(0x21, 0x11, block))
    with pytest.raises(BadProxyHeader, match="TLV"):
        read(v2(0x21, 0x11, encode_v2(*V4)[16:] + b"\x01\x00"))


def test_v2_bound_is_configurable() -> None:
    wire = v2(0x21, 0x11, encode_v2(*V4)[16:] + tlv(0xE0, b"x" * 100))
    reader = ProxyHeaderReader(max_v2_length=64)
    reader.feed(wire[:16])
    with pytest.raises(BadProxyHeader, match="limit"):
        reader.next_event()
    assert read(wire)[0] == ProxyHeader(2, *V4, len(wire))


def test_bad_proxy_header_is_a_remote_protocol_error() -> None:
    assert issubclass(BadProxyHeader, RemoteProtocolError)


# -- properties ----------------------------------------------------------------------------------

addresses = st.one_of(
    st.tuples(st.ip_addresses(v=4), st.ip_addresses(v=4)),
    st.tuples(st.ip_addresses(v=6), st.ip_addresses(v=6)),
)
ports = st.integers(0, 65535)


@settings(max_examples=300)
@given(addresses, ports, ports, st.sampled_from([1, 2]), st.binary(max_size=64), st.data())
def test_round_trip(
    ips: tuple, sport: int, dport: int, version: int, payload: bytes, data: st.DataObject
) -> None:
    src, dst = (str(ips[0]), sport), (str(ips[1]), dport)
    wire = encode_v1(src, dst) if version == 1 else encode_v2(src, dst)
    stream = wire + payload
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=5))
    reader = ProxyHeaderReader()
    pos = 0
    for cut in sorted(cuts):
        reader.feed(stream[pos:cut])
        pos = cut
    reader.feed(stream[pos:])
    assert reader.next_event() == ProxyHeader(version, src, dst, len(wire))
    assert reader.rest() == payload


def assert_only_bad_header(data: bytes, cuts: list[int]) -> None:
    reader = ProxyHeaderReader()
    pos = 0
    for cut in [*sorted(cuts), len(data)]:
        reader.feed(data[pos:cut])
        pos = max(pos, cut)
        try:
            event = reader.next_event()
        except BadProxyHeader:
            return
        if isinstance(event, ProxyHeader):
            assert 0 < event.length <= len(data)
            assert reader.rest() == data[event.length :]
            return
        assert event is NEED_DATA


@settings(max_examples=300)
@given(
    st.sampled_from([b"", b"PROXY ", b"PROXY TCP4 ", b"PROXY TCP6 ", V2_SIGNATURE]),
    st.binary(max_size=200),
    st.lists(st.integers(0, 220), max_size=6),
)
def test_arbitrary_bytes_raise_only_bad_header(prefix: bytes, tail: bytes, cuts: list[int]) -> None:
    assert_only_bad_header(prefix + tail, cuts)


@settings(max_examples=300)
@given(
    st.sampled_from([b"PROXY TCP4 ", b"PROXY TCP6 ", b"PROXY UNKNOWN "]),
    st.text(alphabet="0123456789abcdefABCDEF:. ", max_size=90),
    st.lists(st.integers(0, 110), max_size=4),
)
def test_near_miss_v1_lines_raise_only_bad_header(
    prefix: bytes, text: str, cuts: list[int]
) -> None:
    assert_only_bad_header(prefix + text.encode() + b"\r\n", cuts)


@settings(max_examples=300)
@given(
    st.sampled_from([0x20, 0x21, 0x21, 0x21, 0x22, 0x11]),
    st.sampled_from([0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32, 0x13, 0x41]),
    st.binary(max_size=300),
    st.lists(st.integers(0, 320), max_size=4),
)
def test_near_miss_v2_headers_raise_only_bad_header(
    ver_cmd: int, fam: int, block: bytes, cuts: list[int]
) -> None:
    assert_only_bad_header(v2(ver_cmd, fam, block), cuts)
