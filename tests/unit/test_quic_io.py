"""How l4lb's QUIC side acknowledges (quic/connection.py `ServerQuic`) and batches datagrams
(quic/endpoint.py `send_all`, UDP GSO).

The ACK tests step an aioquic client and a `ServerQuic` by hand, `now` passed in (no
sockets, no sleeps), as aioquic's own tests do. The GSO test sends through a real UDP
socket on 127.0.0.1 to another, which receives the datagrams one by one.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from aioquic.h3.connection import H3_ALPN
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from l4lb.tls.certs import generate_selfsigned
from quic.connection import ACK_DELAY, ServerQuic
from quic.endpoint import QuicEndpoint, gso_supported

CLIENT = ("127.0.0.1", 40000)
SERVER = ("127.0.0.1", 4433)


@pytest.fixture(scope="module")
def pair_config(tmp_path_factory) -> QuicConfiguration:
    tmp: Path = tmp_path_factory.mktemp("quic")
    generate_selfsigned(tmp / "c.crt", tmp / "c.key")
    config = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
    config.load_cert_chain(tmp / "c.crt", tmp / "c.key")
    return config


def handshake(config: QuicConfiguration) -> tuple[QuicConnection, ServerQuic, float]:
    cconf = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name="localhost")
    cconf.verify_mode = 0  # ssl.CERT_NONE
    client = QuicConnection(configuration=cconf)
    now = 1.0
    client.connect(SERVER, now=now)
    server: ServerQuic | None = None
    for _ in range(20):
        for data, _ in client.datagrams_to_send(now):
            if server is None:
                server = ServerQuic(
                    configuration=config, original_destination_connection_id=data[6:14]
                )
                server.held = set()
            server.receive_datagram(data, CLIENT, now)
        assert server is not None
        for data, _ in server.datagrams_to_send(now):
            client.receive_datagram(data, SERVER, now)
        now += 0.01
    assert server is not None and server._handshake_complete
    return client, server, now + 1.0


def exchange(client: QuicConnection, server: ServerQuic, now: float, payload: bytes) -> int:
    """The client sends `payload` on a new stream; the server gets it at `now`."""
    sid = client.get_next_available_stream_id()
    client.send_stream_data(sid, payload, end_stream=True)
    for data, _ in client.datagrams_to_send(now):
        server.receive_datagram(data, CLIENT, now)
    while server.next_event() is not None:
        pass
    return sid


def test_a_response_within_the_delay_carries_the_ack(pair_config):
    """A request answered 5 ms later costs one datagram, not an ACK alone and the response
    (aioquic alone would send its ACK at 1 ms, in a datagram of its own)."""
    client, server, now = handshake(pair_config)
    sid = exchange(client, server, now, b"request")
    assert server.datagrams_to_send(now) == []
    assert server.get_timer() is not None and server.get_timer() >= now + ACK_DELAY - 1e-9
    now += 0.005
    assert server.datagrams_to_send(now) == []  # still no ACK alone
    server.send_stream_data(sid, b"response", end_stream=True)
    sent = server.datagrams_to_send(now)
    assert len(sent) == 1
    for data, _ in sent:
        client.receive_datagram(data, SERVER, now)
    # The ACK came with the response: the client has nothing left in flight.
    assert client._loss.bytes_in_flight == 0


def test_an_unanswered_request_is_acknowledged_after_the_delay(pair_config):
    client, server, now = handshake(pair_config)
    exchange(client, server, now, b"request")
    at = server.get_timer()
    assert at is not None and at <= now + ACK_DELAY + 1e-9
    server.handle_timer(at)
    sent = server.datagrams_to_send(at)
    assert len(sent) == 1
    client.receive_datagram(sent[0][0], SERVER, at)
    assert client._loss.bytes_in_flight == 0


def test_two_full_packets_are_acknowledged_at_once(pair_config):
    """An upload keeps its ACK clock: two full packets' worth is acknowledged without delay."""
    client, server, now = handshake(pair_config)
    exchange(client, server, now, b"u" * 5000)
    sent = server.datagrams_to_send(now)
    assert len(sent) == 1  # the ACK, now
    client.receive_datagram(sent[0][0], SERVER, now)
    assert client._loss.bytes_in_flight == 0


class CountingSocket(socket.socket):
    """A real UDP socket that counts its send calls."""

    calls: list[str]

    def sendto(self, *args: Any) -> int:
        self.calls.append("sendto")
        return super().sendto(*args)

    def sendmsg(self, *args: Any) -> int:
        self.calls.append("sendmsg")
        return super().sendmsg(*args)


class Listener:
    name = "test"


def test_gso_sends_runs_of_one_size_to_one_address_in_one_call():
    rx = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    tx = CountingSocket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.calls = []
    try:
        for s in rx:
            s.bind(("127.0.0.1", 0))
            s.settimeout(2)
        tx.bind(("127.0.0.1", 0))
        if not gso_supported(tx):
            pytest.skip("this kernel has no UDP GSO")
        endpoint = QuicEndpoint.__new__(QuicEndpoint)
        endpoint.sock, endpoint.gso, endpoint.listener = tx, True, Listener()
        a, b = (s.getsockname() for s in rx)
        sent = [(bytes([i]) * 1200, a) for i in range(5)]
        sent += [(b"s" * 300, a), (b"t" * 1200, a), (b"u" * 1200, b), (b"v" * 1300, b)]
        endpoint.send_all(sent)
        # 5 x 1200 + 300 to a; 1200 to a; 1200 to b; 1300 to b (larger: not in the run)
        assert tx.calls == ["sendmsg", "sendto", "sendto", "sendto"]
        for sock, addr in zip(rx, (a, b), strict=True):
            want = [d for d, to in sent if to == addr]
            assert [sock.recv(65536) for _ in want] == want
    finally:
        for s in (*rx, tx):
            s.close()
