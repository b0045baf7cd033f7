"""HTTP/3 end to end: an aioquic client (tests/e2e/h3client.py) against an l4lb subprocess
whose `https` listener has `http3 = true`, over real UDP on 127.0.0.1, with real HTTP/1.1
backends behind it."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import ssl
import struct

import pytest

from tests.e2e.h3client import H3Client
from tests.e2e.helpers import free_port, make_cert, pool_toml, wait_until

pytest.importorskip("aioquic")


def config(tmp_path, port: int, a, b, http: str = "") -> str:
    cert, key = make_cert(tmp_path, "localhost")
    return (
        f'[listener.web]\nbind = "127.0.0.1:{port}"\nprotocol = "https"\n'
        f'[[listener.web.certs]]\ncert = "{cert}"\nkey = "{key}"\n'
        f"[listener.web.http]\nhttp3 = true\nquic_idle_timeout = 2.0\n{http}"
        '[[listener.web.routes]]\nname = "api"\nhost = ["api.example.com"]\npool = "b"\n'
        '[[listener.web.routes]]\nname = "none"\npath_prefix = "/nowhere/"\npool = "dead"\n'
        '[[listener.web.routes]]\nname = "main"\nhost = ["localhost"]\npool = "a"\n'
        + pool_toml("a", [f'address = "{a.address}"'])
        + pool_toml("b", [f'address = "{b.address}"'])
        + pool_toml("dead", [f'address = "127.0.0.1:{free_port()}"'], retries=0)
    )


@pytest.fixture
def h3(proxy, http_backends, tmp_path):
    """l4lb with HTTP/3 on; returns (proxy, port, backend a, backend b)."""

    def start(http: str = ""):
        a, b = http_backends("a", "b")
        port = free_port()
        p = proxy(config(tmp_path, port, a, b, http))
        return p, port, a, b

    return start


def test_get_routed_by_host_with_forwarding_headers(h3):
    p, port, a, b = h3()
    client = H3Client(port)
    try:
        status, headers, body = client.request("GET", "/headers")
        assert status == 200
        seen = json.loads(body)
        assert a.requests >= 1 and b.requests == 0
        fields = {k.lower(): v for k, v in seen["headers"]}
        assert fields["host"] == "localhost"
        assert fields["x-forwarded-for"] == "127.0.0.1"
        assert fields["x-forwarded-proto"] == "https"
        assert "x-request-id" in headers
        status, _, body = client.request("GET", "/headers", authority="api.example.com")
        assert status == 200 and b.requests == 1
    finally:
        client.close()
    assert p.wait_log(r"http=3")


def test_post_body_and_large_download(h3):
    _, port, _, _ = h3()
    client = H3Client(port)
    try:
        body = os.urandom(3 * 1024 * 1024 + 17)
        status, _, answer = client.request("POST", "/digest", body=body)
        assert status == 200
        assert hashlib.sha256(body).hexdigest() in answer.decode()
        size = 8 * 1024 * 1024
        status, _, data = client.request("GET", f"/bytes/{size}")
        assert status == 200 and len(data) == size
    finally:
        client.close()


def test_errors_made_by_l4lb(h3):
    _, port, _, _ = h3()
    client = H3Client(port)
    try:
        status, _, _ = client.request("GET", "/", authority="unknown.example")
        assert status == 404
        status, _, _ = client.request("GET", "/nowhere/x", authority="unknown.example")
        assert status in (502, 503)
    finally:
        client.close()


def tls_head(port: int) -> str:
    """The head of an HTTP/1.1 response over TLS (TCP) from the same listener."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.split(b"\r\n\r\n")[0].decode().lower()


def test_alt_svc_on_the_tcp_listener(h3):
    _, port, _, _ = h3()
    assert f'alt-svc: h3=":{port}"; ma=86400' in tls_head(port)


def test_alt_svc_can_be_turned_off(h3):
    _, port, _, _ = h3("alt_svc_max_age = 0\n")
    assert "alt-svc" not in tls_head(port)


def test_retry_always(h3):
    _, port, _, _ = h3('quic_retry = "always"\n')
    client = H3Client(port)
    try:
        # The first answer to the client's Initial is a Retry (long header, type 3 in v1).
        first = client.received[0]
        assert first[0] & 0x80 and (first[0] & 0x30) >> 4 == 3
        status, _, _ = client.request("GET", "/")
        assert status == 200
    finally:
        client.close()


def test_idle_connection_is_closed(h3):
    _, port, _, _ = h3()
    client = H3Client(port)
    try:
        assert client.request("GET", "/")[0] == 200
        # quic_idle_timeout = 2: l4lb ends the connection (the client's own idle timer is 60s).
        assert client.step_until(lambda: client.terminated is not None, timeout=15)
    finally:
        client.sock.close()


def test_version_negotiation_and_garbage(h3):
    _, port, _, _ = h3()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        # An Initial-sized long-header packet with an unknown version: Version Negotiation.
        dcid, scid = os.urandom(8), os.urandom(8)
        packet = bytes([0xC0]) + struct.pack("!I", 0x1A2A3A4A) + bytes([8]) + dcid
        packet += bytes([8]) + scid + b"\0" + struct.pack("!H", 0x4000 | 1180) + os.urandom(1180)
        s.sendto(packet, ("127.0.0.1", port))
        answer, _ = s.recvfrom(65535)
        assert answer[1:5] == b"\0\0\0\0"  # version 0: Version Negotiation
        assert answer[6 : 6 + 8] == scid
        # Garbage of every shape: no answer, and other clients are served.
        client = H3Client(port)
        try:
            for n in (0, 1, 7, 40, 1200, 1500):
                s.sendto(os.urandom(n), ("127.0.0.1", port))
                s.sendto(bytes([0x40]) + os.urandom(n), ("127.0.0.1", port))
            assert client.request("GET", "/")[0] == 200
        finally:
            client.close()


def test_nat_rebinding_keeps_the_connection(h3):
    _, port, a, _ = h3()
    client = H3Client(port)
    try:
        assert client.request("GET", "/")[0] == 200
        client.rebind()
        status, _, body = client.request("GET", "/bytes/300000")
        assert status == 200 and len(body) == 300000
        assert a.accepted >= 1
    finally:
        client.close()


def test_reload_keeps_the_udp_endpoint_and_its_connections(h3, tmp_path):
    p, port, a, b = h3()
    client = H3Client(port)
    try:
        assert client.request("GET", "/")[0] == 200
        assert p.reload(config(tmp_path, port, a, b, "quic_max_streams = 50\n"))
        assert client.request("GET", "/")[0] == 200  # the same QUIC connection
        other = H3Client(port)  # and new ones are accepted
        try:
            assert other.request("GET", "/")[0] == 200
        finally:
            other.close()
    finally:
        client.close()


def test_http3_needs_an_https_listener(tmp_path):
    from l4lb.config import load_text
    from l4lb.errors import ConfigErrors

    text = (
        '[listener.web]\nbind = "127.0.0.1:8080"\nprotocol = "http"\npool = "p"\n'
        "[listener.web.http]\nhttp3 = true\n"
        '[pool.p]\nservers = [{address = "127.0.0.1:9"}]\n'
    )
    with pytest.raises(ConfigErrors) as info:
        load_text(text, "site.toml", resolve=False)
    message = str(info.value)
    assert "listener.web.http.http3" in message and "HTTP/3 needs TLS" in message


def test_metrics_count_http3(proxy, http_backends, tmp_path):
    a, b = http_backends("a", "b")
    port, admin = free_port(), free_port()
    text = config(tmp_path, port, a, b, 'quic_retry = "always"\n')
    p = proxy(f'[admin]\nbind = "127.0.0.1:{admin}"\n' + text)
    client = H3Client(port)
    try:
        assert client.request("GET", "/")[0] == 200
    finally:
        client.close()

    def metric(name: str) -> int:
        with socket.create_connection(("127.0.0.1", admin), timeout=10) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        for line in data.decode().splitlines():
            if line.startswith(name + "{") and 'listener="web"' in line:
                return int(float(line.rsplit(" ", 1)[1]))
        return -1

    assert wait_until(lambda: metric("l4lb_listener_http3_streams_total") == 1)
    assert metric("l4lb_listener_http3_connections_total") == 1
    assert metric("l4lb_listener_http3_handshakes_total") == 1
    assert metric("l4lb_listener_http3_retries_total") == 1
    assert p.proc.poll() is None
