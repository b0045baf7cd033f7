"""The sans-IO parts of the HTTP/3 front door: the ClientHello read from Initials (SNI), the
stateless reset rules and rate, the 0-RTT ticket store. No sockets: aioquic's own sans-IO
client makes the Initials."""

from __future__ import annotations

import datetime as dt

from aioquic.buffer import Buffer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import pull_quic_header
from aioquic.tls import CipherSuite, SessionTicket
from hypothesis import given, settings
from hypothesis import strategies as st

from quic.hello import HelloReader, Result
from quic.reset import ResetLimiter, stateless_reset
from quic.settings import reset_token
from quic.tickets import TicketStore


def initials(server_name: str | None, alpn: list[str] | None = None) -> list[bytes]:
    config = QuicConfiguration(is_client=True, alpn_protocols=alpn or ["h3"])
    config.server_name = server_name
    quic = QuicConnection(configuration=config)
    quic.connect(("127.0.0.1", 443), now=0.0)
    return [data for data, _ in quic.datagrams_to_send(now=0.0)]


def reader_for(datagram: bytes) -> HelloReader:
    header = pull_quic_header(Buffer(data=datagram), host_cid_length=8)
    return HelloReader(header.destination_cid, header.version)


def test_sni_from_one_initial():
    (datagram,) = initials("api.example.com")
    assert reader_for(datagram).feed(datagram) == "api.example.com"


def test_sni_from_a_hello_in_two_datagrams():
    datagrams = initials("two.example", [f"proto-{i}-" + "x" * 40 for i in range(40)])
    assert len(datagrams) == 3
    reader = reader_for(datagrams[0])
    # The hello is whole only with the last datagram (its ALPN list comes before the name in
    # aioquic's order, so the name is in a later one).
    assert [reader.feed(d) for d in datagrams] == [Result.NEED_DATA] * 2 + ["two.example"]


def test_no_sni_and_foreign_keys_are_unknown():
    (datagram,) = initials(None)
    assert reader_for(datagram).feed(datagram) is Result.UNKNOWN
    (datagram,) = initials("a.example")
    # One byte changed: the packet does not authenticate.
    broken = bytearray(datagram)
    broken[100] ^= 1
    assert reader_for(datagram).feed(bytes(broken)) is Result.UNKNOWN


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=1500) | st.builds(lambda b: bytes([0xC0]) + b, st.binary(max_size=1500)),
    st.binary(min_size=8, max_size=8),
)
def test_hello_reader_never_raises(data, dcid):
    reader = HelloReader(dcid, 1)
    for _ in range(6):
        assert reader.feed(data) in (Result.NEED_DATA, Result.UNKNOWN) or isinstance(
            reader.feed(data), str
        )


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_initials_never_raise(data):
    (datagram,) = initials("a.example")
    reader = reader_for(datagram)
    raw = bytearray(datagram)
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    assert reader.feed(bytes(raw)) in ("a.example", Result.UNKNOWN, Result.NEED_DATA)


def test_stateless_reset_shape_and_token():
    key, cid = b"k" * 32, b"\x01abcdefg"
    packet = bytes([0x41]) + cid + b"p" * 50
    reset = stateless_reset(key, packet)
    assert reset is not None
    assert reset[-16:] == reset_token(key, cid) == reset_token(key, cid)
    assert len(reset) == len(packet) - 1 and reset[0] & 0xC0 == 0x40
    assert len(stateless_reset(key, bytes([0x41]) + cid + b"p" * 500) or b"") == 64
    assert stateless_reset(key, packet[:29]) is None  # a reset could not be smaller
    assert stateless_reset(key, bytes([0xC1]) + packet[1:]) is None  # a long header
    assert reset_token(b"other" * 8, cid) != reset_token(key, cid)


def test_reset_limiter_is_a_token_bucket():
    limiter = ResetLimiter(rate=10, burst=5)
    assert [limiter.allow(100.0) for _ in range(7)] == [True] * 5 + [False] * 2
    # 0.25 s at 10/s: two more
    assert [limiter.allow(100.25) for _ in range(3)] == [True, True, False]
    assert sum(limiter.allow(200.0) for _ in range(10)) == 5  # never more than the burst


def ticket(label: bytes) -> SessionTicket:
    now = dt.datetime.now(dt.UTC)
    return SessionTicket(
        age_add=0,
        cipher_suite=CipherSuite.AES_128_GCM_SHA256,
        not_valid_after=now + dt.timedelta(days=1),
        not_valid_before=now,
        resumption_secret=b"s" * 32,
        server_name="",
        ticket=label,
    )


def test_tickets_single_use_same_name_bounded():
    store = TicketStore(limit=2)
    store.add("a.example", ticket(b"1"))
    assert store.take("b.example", b"1") is None  # another name: no resumption
    store.add("a.example", ticket(b"2"))
    assert store.take("a.example", b"2").ticket == b"2"
    assert store.take("a.example", b"2") is None  # single use
    for label in (b"3", b"4", b"5"):
        store.add(None, ticket(label))
    assert store.take(None, b"3") is None  # the oldest went first
    assert store.take(None, b"5") is not None
