"""TLS from a pool to its servers: chain only, or the chain and a given name, on a server at
127.0.0.1 whose certificate is for `backend.internal` (issue 9 item 4). Real TLS backends,
signed by a test CA or by another one; a tcp listener and an http listener in front."""

from __future__ import annotations

import socket

import pytest

from tests.e2e.helpers import TlsBackend, free_port, make_ca_cert, pool_toml

REFUSED_BY_NAME = "not valid for the name 'other.internal'"
REFUSED_BY_CA = "unable to get local issuer certificate"


@pytest.fixture
def servers(tmp_path):
    """Two TLS servers for backend.internal: one signed by the trusted CA, one by another CA;
    both answer raw bytes (tcp) and HTTP."""
    ca, cert, key = make_ca_cert(tmp_path, "test-ca", "backend.internal")
    _, rogue_cert, rogue_key = make_ca_cert(tmp_path, "other-ca", "backend.internal")
    made = {
        "good": TlsBackend("good", cert, key),
        "rogue": TlsBackend("rogue", rogue_cert, rogue_key),
        "good-http": TlsBackend("good-http", cert, key, http=True),
        "rogue-http": TlsBackend("rogue-http", rogue_cert, rogue_key, http=True),
    }
    yield ca, made
    for backend in made.values():
        backend.close()


def tls_table(ca: str, mode: str) -> dict[str, str]:
    table = {"ca_file": f'"{ca}"'}
    if mode == "chain":
        table["verify"] = '"chain"'
    elif mode != "default":
        table["verify_name"] = f'"{mode}"'
    return table


def tcp_proxy(proxy, backend: TlsBackend, tls: dict[str, str]) -> tuple[int, object]:
    port = free_port()
    config = f'[listener.l]\nbind = "127.0.0.1:{port}"\npool = "p"\n'
    p = proxy(config + pool_toml("p", [f'address = "{backend.address}"'], retries=0, tls=tls))
    return port, p


def http_get(port: int) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: site\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def http_proxy(proxy, backend: TlsBackend, tls: dict[str, str]) -> tuple[int, object]:
    port = free_port()
    config = f'[listener.w]\nbind = "127.0.0.1:{port}"\nprotocol = "http"\npool = "p"\n'
    p = proxy(config + pool_toml("p", [f'address = "{backend.address}"'], retries=0, tls=tls))
    return port, p


@pytest.mark.parametrize("mode", ["chain", "backend.internal"])
def test_tcp_pool_connects_with_chain_only_or_the_right_name(proxy, servers, mode):
    ca, made = servers
    port, _ = tcp_proxy(proxy, made["good"], tls_table(ca, mode))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        assert s.recv(100) == b"good\n"
        s.sendall(b"hello")
        assert s.recv(100) == b"hello"


@pytest.mark.parametrize(
    ("backend", "mode", "reason"),
    [
        ("good", "other.internal", REFUSED_BY_NAME),
        ("good", "default", "not valid for the address '127.0.0.1' (set verify_name"),
        ("rogue", "chain", REFUSED_BY_CA),
        ("rogue", "backend.internal", REFUSED_BY_CA),
    ],
)
def test_tcp_pool_refuses_a_wrong_name_or_another_ca(proxy, servers, backend, mode, reason):
    ca, made = servers
    port, p = tcp_proxy(proxy, made[backend], tls_table(ca, mode))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        assert s.recv(100) == b""  # closed without a byte from the server
    assert p.wait_log("TLS handshake failed: certificate verify failed: "), p.log()
    assert reason in p.log()


@pytest.mark.parametrize("mode", ["chain", "backend.internal"])
def test_http_pool_connects_with_chain_only_or_the_right_name(proxy, servers, mode):
    ca, made = servers
    port, _ = http_proxy(proxy, made["good-http"], tls_table(ca, mode))
    assert http_get(port) == (200, b"good-http")


@pytest.mark.parametrize(
    ("backend", "mode", "reason"),
    [
        ("good-http", "other.internal", REFUSED_BY_NAME),
        ("rogue-http", "chain", REFUSED_BY_CA),
        ("rogue-http", "backend.internal", REFUSED_BY_CA),
    ],
)
def test_http_pool_answers_502_for_a_wrong_name_or_another_ca(
    proxy, servers, backend, mode, reason
):
    ca, made = servers
    port, p = http_proxy(proxy, made[backend], tls_table(ca, mode))
    status, _ = http_get(port)
    assert status == 502
    assert p.wait_log("TLS handshake failed: certificate verify failed: "), p.log()
    assert reason in p.log()


def test_sni_and_verified_name_can_differ(proxy, servers):
    """`sni` is what is sent; `verify_name` what the certificate must carry."""
    ca, made = servers
    good = {**tls_table(ca, "backend.internal"), "sni": '"front.example"'}
    port, _ = tcp_proxy(proxy, made["good"], good)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        assert s.recv(100) == b"good\n"


def test_a_verified_name_apart_from_the_sni_still_refuses(proxy, servers):
    ca, made = servers
    bad = {**tls_table(ca, "other.internal"), "sni": '"backend.internal"'}
    port, p = http_proxy(proxy, made["good-http"], bad)
    assert http_get(port)[0] == 502
    assert p.wait_log(REFUSED_BY_NAME), p.log()


def test_server_verify_name_overrides_the_pool(proxy, servers):
    ca, made = servers
    port = free_port()
    config = f'[listener.l]\nbind = "127.0.0.1:{port}"\npool = "p"\n'
    server = f'address = "{made["good"].address}"\nverify_name = "backend.internal"'
    proxy(config + pool_toml("p", [server], retries=0, tls=tls_table(ca, "other.internal")))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        assert s.recv(100) == b"good\n"
