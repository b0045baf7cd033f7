"""HTTP/3 under abuse: a flood of Initials from many 127.0.0.x addresses and ports, and
random or mangled datagrams (hypothesis) at the datagram entry point, against an l4lb
subprocess on 127.0.0.1, while a real client's connection must keep working."""

from __future__ import annotations

import json
import random
import select
import socket
import time

import pytest
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.h3client import H3Client
from tests.e2e.helpers import free_port, make_cert, pool_toml, wait_until

pytest.importorskip("aioquic")


def start(proxy, http_backends, tmp_path, http: str = ""):
    (a,) = http_backends("a")
    port, admin = free_port(), free_port()
    cert, key = make_cert(tmp_path, "localhost")
    p = proxy(
        f'[admin]\nbind = "127.0.0.1:{admin}"\n'
        f'[listener.web]\nbind = "127.0.0.1:{port}"\nprotocol = "https"\npool = "a"\n'
        f'[[listener.web.certs]]\ncert = "{cert}"\nkey = "{key}"\n'
        f"[listener.web.http]\nhttp3 = true\n{http}" + pool_toml("a", [f'address = "{a.address}"'])
    )
    return p, port, admin


def web_stats(admin: int) -> dict:
    with socket.create_connection(("127.0.0.1", admin), timeout=10) as s:
        s.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status = json.loads(data.split(b"\r\n\r\n", 1)[1])
    return next(x for x in status["listeners"] if x["name"] == "web")


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def client_initial() -> bytes:
    """A real client's first Initial (a full ClientHello, 1200 bytes) for a fresh CID."""
    config = QuicConfiguration(is_client=True, alpn_protocols=["h3"])
    config.server_name = "localhost"
    quic = QuicConnection(configuration=config)
    quic.connect(("127.0.0.1", 443), now=time.monotonic())
    return quic.datagrams_to_send(now=time.monotonic())[0][0]


def is_retry(datagram: bytes) -> bool:
    return len(datagram) > 5 and datagram[0] & 0xF0 == 0xF0 and datagram[1:5] == b"\0\0\0\1"


def test_initial_flood_gets_retry_within_the_amplification_limit(proxy, http_backends, tmp_path):
    threshold = 20
    p, port, admin = start(proxy, http_backends, tmp_path, f"quic_retry_threshold = {threshold}\n")
    before = rss_kib(p.proc.pid)
    sources = []
    try:
        for host in range(2, 42):  # 40 addresses x 5 ports, two Initials each: 400 handshakes
            for _ in range(5):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind((f"127.0.0.{host}", 0))
                s.setblocking(False)
                sources.append([s, 0, 0, 0])  # socket, bytes sent, bytes received, Retries
        for entry in sources:
            for _ in range(2):
                data = client_initial()
                entry[0].sendto(data, ("127.0.0.1", port))
                entry[1] += len(data)
        deadline = time.monotonic() + 3  # what l4lb sends in 3 s (its first flights, PTOs)
        by_sock = {entry[0]: entry for entry in sources}
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select(list(by_sock), [], [], min(left, 0.2))
            for s in ready:
                while True:
                    try:
                        data = s.recv(65535)
                    except BlockingIOError:
                        break
                    by_sock[s][2] += len(data)
                    by_sock[s][3] += is_retry(data)
        retries = sum(e[3] for e in sources)
        # Past `threshold` unfinished handshakes every new client is asked to prove its
        # address with a Retry; none gets more than 3x what it sent (RFC 9000 §8.1).
        assert retries >= 400 - threshold - 10
        for _, sent, received, _ in sources:
            assert received <= 3 * sent
        stats = web_stats(admin)
        assert stats["h3_retries"] == retries
        assert stats["h3_connections"] <= threshold + 10
        assert rss_kib(p.proc.pid) - before < 50 * 1024  # bounded: no state per Retry
        # A real client still gets in (through a Retry of its own) and is served.
        client = H3Client(port)
        try:
            assert is_retry(client.received[0])
            assert client.request("GET", "/")[0] == 200
        finally:
            client.close()
    finally:
        for entry in sources:
            entry[0].close()


def mangle(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    raw = bytearray(data)
    for pos, value in edits:
        raw[pos % len(raw)] = value
    return bytes(raw)


def test_fuzzed_datagrams_leave_other_connections_working(proxy, http_backends, tmp_path):
    p, port, admin = start(proxy, http_backends, tmp_path)
    client = H3Client(port)
    assert client.request("GET", "/")[0] == 200
    # Templates: a real Initial, and a real 1-RTT packet of the live connection (a PING).
    initial = client_initial()
    client.quic.send_ping(1)
    one_rtt = client.quic.datagrams_to_send(now=time.monotonic())[0][0]
    target = ("127.0.0.1", port)
    edits = st.lists(
        st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), min_size=1, max_size=8
    )
    # Uniform random bytes too: hypothesis' own binaries are mostly short and zero-filled.
    noise = st.builds(
        lambda seed, n: random.Random(seed).randbytes(n),
        st.integers(0, 1 << 32),
        st.integers(1, 1500),
    )
    datagrams = st.one_of(
        st.binary(max_size=1500),
        noise,
        st.builds(lambda b: bytes([0x40 | b[0] & 0x3F]) + b[1:], noise),  # short header
        st.builds(lambda b: bytes([0xC0 | b[0] & 0x3F, 0, 0, 0, 1]) + b, noise),  # long, v1
        st.builds(lambda b: bytes([0x40]) + client.quic._peer_cid.cid + b, noise),  # live CID
        st.builds(mangle, st.just(initial), edits),
        st.builds(mangle, st.just(one_rtt), edits),
        st.builds(lambda n: initial[:n], st.integers(0, len(initial))),
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:

        @settings(
            max_examples=400,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(datagrams, st.booleans())
        def send(data: bytes, from_client: bool) -> None:
            (client.sock if from_client else other).sendto(data, target)

        send()
    try:
        # The live connection and a new one are served; l4lb logged no internal error.
        for _ in range(3):
            assert client.request("GET", "/")[0] == 200
        fresh = H3Client(port)
        try:
            assert fresh.request("GET", "/")[0] == 200
        finally:
            fresh.close()
    finally:
        client.close()
    assert p.proc.poll() is None
    assert "Traceback" not in p.log() and "internal error" not in p.log()
    assert wait_until(lambda: web_stats(admin)["h3_dropped"] > 0)
