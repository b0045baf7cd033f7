"""tls-passthrough routing by SNI and the PROXY protocol, end to end with real TLS clients."""

from __future__ import annotations

import socket
import socketserver
import ssl
import subprocess
import threading

import pytest

from l4lb.proxyproto import NEED_DATA, ProxyHeaderReader, encode_v1
from tests.e2e.helpers import TlsBackend, free_port, make_cert, pool_toml


@pytest.fixture
def tls_backends(tmp_path):
    made = {}
    for name in ("a.test", "b.test", "default.test"):
        cert, key = make_cert(tmp_path, name)
        made[name] = TlsBackend(name, cert, key)
    yield made
    for b in made.values():
        b.close()


def passthrough_config(port: int, backends: dict, default: bool = True) -> str:
    a, b, d = backends["a.test"], backends["b.test"], backends["default.test"]
    text = f'[listener.tls]\nbind = "127.0.0.1:{port}"\nprotocol = "tls-passthrough"\n'
    text += 'preread_timeout = "1s"\n'
    if default:
        text += 'pool = "fallback"\n'
    text += '[[listener.tls.routes]]\nsni = "a.test"\npool = "pa"\n'
    text += '[[listener.tls.routes]]\nsni = ["b.test", "*.b.test"]\npool = "pb"\n'
    text += pool_toml("pa", [f'address = "{a.address}"'])
    text += pool_toml("pb", [f'address = "{b.address}"'])
    text += pool_toml("fallback", [f'address = "{d.address}"'])
    return text


def tls_name(port: int, server_hostname: str | None, cafile: str | None) -> tuple[str, dict]:
    ctx = ssl.create_default_context(cafile=cafile) if cafile else ssl._create_unverified_context()
    if not cafile:
        ctx.check_hostname = False
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=server_hostname) as tls,
    ):
        line = tls.recv(100).decode().strip()
        tls.sendall(b"ping")
        assert tls.recv(10) == b"ping"
        return line, tls.getpeercert() if cafile else {}


def test_sni_picks_the_backend_and_its_own_certificate(proxy, tls_backends):
    port = free_port()
    p = proxy(passthrough_config(port, tls_backends))
    for name in ("a.test", "b.test"):
        line, cert = tls_name(port, name, tls_backends[name].cert)  # verified against its cert
        assert line == name
        assert dict(x[0] for x in cert["subject"])["commonName"] == name
    assert p.wait_log(r"sni=b\.test")


def test_openssl_s_client_reaches_the_right_backend(proxy, tls_backends):
    port = free_port()
    proxy(passthrough_config(port, tls_backends))
    out = subprocess.run(
        [
            "openssl",
            "s_client",
            "-connect",
            f"127.0.0.1:{port}",
            "-servername",
            "b.test",
            "-alpn",
            "h2",
        ],
        input=b"",
        capture_output=True,
        timeout=30,
    ).stdout.decode()
    assert "CN = b.test" in out or "CN=b.test" in out
    assert "ALPN protocol: h2" in out


def test_wildcard_route_and_default_route(proxy, tls_backends):
    port = free_port()
    proxy(passthrough_config(port, tls_backends))
    assert tls_name(port, "x.y.b.test", None)[0] == "b.test"
    assert tls_name(port, "other.test", None)[0] == "default.test"
    assert tls_name(port, None, None)[0] == "default.test"  # no SNI at all


def test_no_route_and_no_default_closes(proxy, tls_backends):
    port = free_port()
    p = proxy(passthrough_config(port, tls_backends, default=False))
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        tls_name(port, "other.test", None)
    assert p.wait_log(r"end=no_route")
    assert tls_name(port, "a.test", None)[0] == "a.test"  # others unaffected


def test_plain_bytes_and_silence_are_closed_cleanly(proxy, tls_backends):
    port = free_port()
    p = proxy(passthrough_config(port, tls_backends))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        assert s.recv(100) == b""
    assert p.wait_log(r"end=not_tls")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        assert s.recv(100) == b""  # preread_timeout is 1s
    assert p.wait_log(r"end=preread_timeout")
    assert tls_name(port, "a.test", None)[0] == "a.test"


class ProxyAwareBackend(socketserver.ThreadingTCPServer):
    """Reads a PROXY header, answers with the source it names, then echoes."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), self._Handler)
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()

    class _Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            reader = ProxyHeaderReader()
            while (event := reader.next_event()) is NEED_DATA:
                data = self.request.recv(4096)
                if not data:
                    return
                reader.feed(data)
            src = event.src
            self.request.sendall(f"v{event.version} {src[0]} {src[1]}\n".encode())
            rest = reader.rest()
            if rest:
                self.request.sendall(rest)
            while data := self.request.recv(4096):
                self.request.sendall(data)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_proxy_protocol_to_servers(proxy, version):
    backend = ProxyAwareBackend()
    try:
        port = free_port()
        proxy(
            f'[listener.l]\nbind = "127.0.0.1:{port}"\npool = "p"\n'
            + pool_toml(
                "p", [f'address = "127.0.0.1:{backend.port}"'], proxy_protocol=f'"{version}"'
            )
        )
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"hello")
            line = b""
            while not line.endswith(b"\n"):
                line += s.recv(1)
            mine = s.getsockname()
            assert line.decode() == f"{version} {mine[0]} {mine[1]}\n"
            assert s.recv(5) == b"hello"
    finally:
        backend.shutdown()
        backend.server_close()


def test_accept_proxy_uses_the_real_client_address(proxy):
    backend = ProxyAwareBackend()
    try:
        port = free_port()
        p = proxy(
            f'[listener.l]\nbind = "127.0.0.1:{port}"\npool = "p"\naccept_proxy = true\n'
            + pool_toml("p", [f'address = "127.0.0.1:{backend.port}"'], proxy_protocol='"v2"')
        )
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(encode_v1(("203.0.113.7", 5555), ("192.0.2.1", 443)) + b"data")
            line = b""
            while not line.endswith(b"\n"):
                line += s.recv(1)
            assert line == b"v2 203.0.113.7 5555\n"
            assert s.recv(4) == b"data"
        assert p.wait_log(r"203\.0\.113\.7:5555 l p/")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"PROXY TCP4 999.1.1.1 1.1.1.1 1 2\r\n")
            assert s.recv(10) == b""
        assert p.wait_log(r"end=bad_proxy_header")
    finally:
        backend.shutdown()
        backend.server_close()
