"""HTTP/3 front door, the QUIC details: certificate by SNI, stateless reset, 0-RTT. An aioquic
client (tests/e2e/h3client.py) and raw UDP sockets against an l4lb subprocess on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import os
import select
import signal
import socket

import pytest

from tests.e2e.h3client import H3Client
from tests.e2e.helpers import free_port, make_cert, pool_toml, wait_until
from tests.e2e.udprelay import LossyRelay

pytest.importorskip("aioquic")


def config(tmp_path, port: int, backend, http: str = "", names=("localhost",)) -> str:
    certs = ""
    for name in names:
        cert, key = make_cert(tmp_path, name)
        certs += f'[[listener.web.certs]]\ncert = "{cert}"\nkey = "{key}"\n'
    return (
        f'[listener.web]\nbind = "127.0.0.1:{port}"\nprotocol = "https"\npool = "a"\n'
        + certs
        + f"[listener.web.http]\nhttp3 = true\n{http}"
        + pool_toml("a", [f'address = "{backend.address}"'])
    )


@pytest.fixture
def h3(proxy, http_backends, tmp_path):
    def start(http: str = "", names=("localhost",)):
        (a,) = http_backends("a")
        port, admin = free_port(), free_port()
        text = f'[admin]\nbind = "127.0.0.1:{admin}"\n' + config(tmp_path, port, a, http, names)
        p = proxy(text)
        p.admin = admin
        return p, port, a

    return start


@pytest.mark.parametrize("retry", ["auto", "always"])
def test_certificate_chosen_by_sni(h3, retry):
    _, port, _ = h3(f'quic_retry = "{retry}"\n', names=("localhost", "other.example"))
    for name, expected in (
        ("other.example", "CN=other.example"),
        ("localhost", "CN=localhost"),
        ("unknown.example", "CN=localhost"),  # no certificate covers it: the first one
    ):
        client = H3Client(port, server_name=name)
        try:
            assert client.peer_name() == expected
            assert client.request("GET", "/", authority=name)[0] == 200
        finally:
            client.close()
    # A ClientHello in two datagrams (a long ALPN list, as post-quantum key shares make one).
    alpn = [f"x-protocol-{i:03d}-" + "p" * 40 for i in range(40)]
    client = H3Client(port, server_name="other.example", extra_alpn=alpn)
    try:
        assert client.peer_name() == "CN=other.example"
        assert client.request("GET", "/", authority="other.example")[0] == 200
    finally:
        client.close()


def test_cid_program_steers_short_headers_by_their_worker_byte():
    """The kernel side of steering, alone: sockets of one group, packets from many ports."""
    from l4lb.config.values import Address
    from quic.steering import open_steered_group

    group = open_steered_group(Address("127.0.0.1", free_port()), 3)
    port = group[0].getsockname()[1]
    try:
        for i in range(12):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(bytes([0x41, i % 3]) + os.urandom(40), ("127.0.0.1", port))
                ready, _, _ = select.select(group, [], [], 5)
                assert [group.index(r) for r in ready] == [i % 3]
                ready[0].recv(100)
    finally:
        for sock in group:
            sock.close()


def short_header(cid: bytes, size: int) -> bytes:
    return bytes([0x40 | 0x01]) + cid + os.urandom(size - 1 - len(cid))


def answer(s: socket.socket, port: int, packet: bytes) -> bytes:
    """The first answer to `packet`, sent again every 0.2 s for up to 10 s (l4lb keeps a
    closed connection for a few probe timeouts before it forgets it)."""
    s.settimeout(0.2)
    for _ in range(50):
        s.sendto(packet, ("127.0.0.1", port))
        try:
            return s.recvfrom(65535)[0]
        except TimeoutError:
            pass
    raise AssertionError("no answer")


def test_stateless_reset_for_a_forgotten_connection(h3):
    p, port, _ = h3("quic_idle_timeout = 1.0\n")
    client = H3Client(port)
    try:
        assert client.request("GET", "/")[0] == 200
        # The tokens l4lb announced: for its first connection ID (transport parameters) and
        # the ones it issued since (NEW_CONNECTION_ID).
        quic = client.quic
        tokens = {quic._peer_cid.cid: quic._peer_cid.stateless_reset_token}
        tokens.update({c.cid: c.stateless_reset_token for c in quic._peer_cid_available})
        assert len(tokens) >= 2 and all(tokens.values())
        # l4lb forgets the connection after its idle timeout (the client's is 60 s).
        assert client.step_until(lambda: client.terminated is not None, timeout=15)
    finally:
        client.sock.close()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for cid, token in tokens.items():
            packet = short_header(cid, 60)
            reset = answer(s, port, packet)
            assert reset[-16:] == token  # the same token, from the key, not from memory
            assert 21 <= len(reset) < len(packet) and reset[0] & 0xC0 == 0x40
        # Never in answer to a packet too small to be answered by a smaller reset.
        s.sendto(short_header(next(iter(tokens)), 24), ("127.0.0.1", port))
        s.settimeout(0.5)
        with pytest.raises(TimeoutError):
            s.recvfrom(65535)
    assert listener_stats(p.admin)["h3_stateless_resets"] >= len(tokens)
    assert metric(p.admin, "l4lb_listener_http3_stateless_resets_total") >= len(tokens)


def test_stateless_reset_can_be_turned_off(h3):
    _, port, _ = h3("quic_stateless_reset = false\n")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.5)
        s.sendto(short_header(os.urandom(8), 60), ("127.0.0.1", port))
        with pytest.raises(TimeoutError):
            s.recvfrom(65535)
        client = H3Client(port)  # and the endpoint is alive
        try:
            assert client.request("GET", "/")[0] == 200
        finally:
            client.close()


def test_responses_use_no_qpack_dynamic_table(h3):
    """The client offers a 4 KB table (aioquic's default); l4lb's responses do not use it, so
    nothing comes on l4lb's encoder stream and the client owes no acknowledgements."""
    _, port, _ = h3()
    client = H3Client(port)
    try:
        assert client.h3._max_table_capacity == 4096
        for i in range(6):
            status, fields, body = client.request("GET", f"/same-head-{i % 2}")
            assert status == 200 and body
            assert fields["x-server"] == "a" and fields["content-length"] == str(len(body))
        client.step_until(lambda: False, timeout=0.3)  # anything late on the QPACK streams
        assert client.h3._encoder_bytes_received == 0  # l4lb's encoder stream: no inserts
        assert client.h3._decoder_bytes_sent == 0  # the client's decoder stream: no acks
    finally:
        client.close()


def ticket_from(port: int):
    first = H3Client(port)
    try:
        assert first.request("GET", "/")[0] == 200
        assert first.step_until(lambda: bool(first.tickets), timeout=5)
        return first.tickets[-1]
    finally:
        first.close()


def early(port: int, ticket, method: str, path: str):
    """A request sent in 0-RTT with `ticket`: (early data accepted, status, body)."""
    client = H3Client(port, ticket=ticket, wait=False)
    try:
        sid = client.send(method, path)
        client.wait_connected()
        status, _, body = client.response(sid)
        return client.early_data_accepted, status, body
    finally:
        client.close()


def test_early_data_safe_methods_only(h3):
    p, port, a = h3("quic_early_data = true\n")
    accepted, status, body = early(port, ticket_from(port), "GET", "/headers")
    assert accepted and status == 200
    fields = {k.lower(): v for k, v in json.loads(body)["headers"]}
    assert fields.get("early-data") == "1"
    # An unsafe method in early data: 425 Too Early, and the server never sees it.
    ticket = ticket_from(port)
    before = a.requests
    accepted, status, _ = early(port, ticket, "POST", "/headers")
    assert accepted and status == 425 and a.requests == before
    # A server's own 425 to an early request reaches the client, unretried (RFC 8470 §5.2).
    ticket = ticket_from(port)
    before = a.requests
    accepted, status, _ = early(port, ticket, "GET", "/status/425")
    assert accepted and status == 425 and a.requests == before + 1
    # A ticket is single use: a replayed ClientHello gets no 0-RTT.
    ticket = ticket_from(port)
    assert early(port, ticket, "GET", "/")[0]
    accepted, status, _ = early(port, ticket, "GET", "/")
    assert not accepted and status == 200
    # Counted: three safe requests taken early, one refused; every handshake.
    stats = listener_stats(p.admin)
    assert (stats["h3_early_accepted"], stats["h3_early_refused"]) == (3, 1)
    assert stats["h3_handshakes"] == stats["h3_connections"] == 9
    assert metric(p.admin, "l4lb_listener_http3_early_data_accepted_total") == 3
    assert metric(p.admin, "l4lb_listener_http3_early_data_refused_total") == 1


def test_early_data_off_by_default(h3):
    _, port, _ = h3()
    first = H3Client(port)
    try:
        assert first.request("GET", "/")[0] == 200
        first.step_until(lambda: bool(first.tickets), timeout=1)
        assert first.tickets == []  # no ticket issued, so no resumption and no 0-RTT
    finally:
        first.close()


def test_migration_with_two_workers(proxy, http_backends, tmp_path):
    """Each rebinding gives the client a new port, which SO_REUSEPORT's hash alone sends to
    either worker (half the time the wrong one); l4lb's connection IDs and its socket
    program send every packet to the worker that owns the connection."""
    (a,) = http_backends("a")
    port, admin = free_port(), free_port()
    admin_toml = f'[admin]\nbind = "127.0.0.1:{admin}"\n'
    p = proxy("[global]\nworkers = 2\n" + admin_toml + config(tmp_path, port, a))
    assert p.wait_log(r"all 2 workers serving", 20), p.log()
    client = H3Client(port)
    try:
        rebind_and_fetch(client)
        # And in the middle of a transfer: the port changes twice while the body comes.
        size = 3_000_000
        sid = client.send("GET", f"/bytes/{size}")

        def got() -> int:
            return sum(map(len, client.responses.get(sid, {}).get("body", [])))

        for third in (size // 3, 2 * size // 3):
            assert client.step_until(lambda t=third: got() > t)
            client.rebind(ping=True)
        status, _, body = client.response(sid)
        assert status == 200 and body == b"b" * size
        assert client.terminated is None
    finally:
        client.close()
    # A worker's first CID byte is its index: both workers get connections of their own.
    assert owners_of(port) == {0, 1}
    # The supervisor's /status sums the workers' HTTP/3 counters (reports once a second).
    assert wait_until(lambda: listener_stats(admin)["h3_handshakes"] == 13)


def rebind_and_fetch(client: H3Client) -> None:
    assert client.request("GET", "/")[0] == 200
    for _ in range(8):  # without steering, all 8 on the right worker: 1 chance in 256
        client.rebind()
        status, _, body = client.request("GET", "/bytes/20000")
        assert status == 200 and len(body) == 20000


def owners_of(port: int) -> set[int]:
    """The workers (the first byte of their connection IDs) that 12 new clients reached."""
    owners = set()
    for _ in range(12):
        other = H3Client(port)
        try:
            owners.add(other.quic._peer_cid.cid[0])
            assert other.request("GET", "/")[0] == 200
        finally:
            other.close()
    return owners  # (12 hashed Initials all on one worker: 1 in 2048)


def udp_bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_a_reload_that_turns_http3_on_steers_it_too(proxy, http_backends, tmp_path):
    """With two workers, HTTP/3 added by a reload: the supervisor binds the steered group
    and hands each running worker its socket before the reload signal, so a client that
    changes its port keeps its connection, as on a listener the instance started with. A
    reload that turns it off again closes every copy: the UDP port is free."""
    (a,) = http_backends("a")
    port, admin = free_port(), free_port()
    text = f'[global]\nworkers = 2\n[admin]\nbind = "127.0.0.1:{admin}"\n'
    text += config(tmp_path, port, a)
    p = proxy(text.replace("http3 = true", "http3 = false"))
    assert p.wait_log(r"all 2 workers serving", 20), p.log()
    for n, turned in ((1, text), (2, text.replace("http3 = true", "http3 = false"))):
        p.path.write_text(turned)
        p.proc.send_signal(signal.SIGHUP)
        for i in range(2):
            assert p.wait_log(rf"worker {i}: reload {n} applied", 20), p.log()
        if n == 1:
            assert not udp_bindable(port)
            client = H3Client(port)
            try:
                rebind_and_fetch(client)
                assert client.terminated is None
            finally:
                client.close()
            assert owners_of(port) == {0, 1}
    assert wait_until(lambda: udp_bindable(port), timeout=10), p.log()
    assert "cannot hand a worker" not in p.log()


def status_of(admin: int) -> dict:
    with socket.create_connection(("127.0.0.1", admin), timeout=10) as s:
        s.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return json.loads(data.split(b"\r\n\r\n", 1)[1])


def listener_stats(admin: int) -> dict:
    return next(x for x in status_of(admin)["listeners"] if x["name"] == "web")


def metric(admin: int, name: str) -> int:
    with socket.create_connection(("127.0.0.1", admin), timeout=10) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    for line in data.decode().splitlines():
        if line.startswith(name + "{") and 'listener="web"' in line:
            return int(float(line.rsplit(" ", 1)[1]))
    return -1


# Datagrams of 8 KB (loopback carries them; the default is 1200) keep the packet count, which
# the Python client, relay and server pay for one by one, low enough for a test of seconds.
MTU = 8192


def test_10mb_each_way_through_a_lossy_reordering_network(proxy, http_backends, tmp_path):
    (a,) = http_backends("a")
    port, admin = free_port(), free_port()
    text = config(tmp_path, port, a, f"quic_max_datagram_size = {MTU}\n")
    p = proxy(f'[admin]\nbind = "127.0.0.1:{admin}"\n' + text)
    relay = LossyRelay(("127.0.0.1", port), loss=0.05)
    client = H3Client(relay.port, max_datagram_size=MTU)
    try:
        size = 10 * 1024 * 1024
        status, _, data = client.request("GET", f"/bytes/{size}")
        assert status == 200 and len(data) == size and data == b"b" * size
        body = os.urandom(size)
        status, _, answer = client.request("POST", "/digest", body=body)
        assert status == 200
        assert answer.decode() == f"{size} {hashlib.sha256(body).hexdigest()}"
    finally:
        client.close()
        relay.close()
    assert relay.dropped > 100 and relay.reordered > 50 and relay.duplicated > 20
    # l4lb saw the loss of its packets and resent them.
    assert wait_until(lambda: listener_stats(admin)["h3_packets_lost"] > 0)
    assert p.proc.poll() is None
