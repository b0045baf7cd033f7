"""server_context and client_context in real TLS handshakes over 127.0.0.1, and OCSP file checks.

A threaded server accepts connections with the context under test, records what it saw (or why
the handshake failed), answers one `ping` with `pong` and closes. Clients are the standard
library's `ssl` and `openssl s_client`. Nothing is mocked.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import queue
import shutil
import socket
import ssl
import subprocess
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from test_tls_certs import NOW, Issued, MiniCA

from l4lb.config import load_text
from l4lb.config.schema import PoolConfig
from l4lb.tls.build import upstream_tls
from l4lb.tls.certs import CertError, CertPair, generate_selfsigned, load_pair
from l4lb.tls.context import (
    TLS12_CIPHERS,
    client_context,
    load_ocsp_response,
    peer_subject,
    server_context,
)

TIMEOUT = 5.0

# -- a real server and a real client -------------------------------------------------------------


@dataclass
class Seen:
    """What the server saw of one connection."""

    error: str | None = None
    version: str | None = None
    cipher: str | None = None
    alpn: str | None = None
    reused: bool = False
    client: str | None = None


class Server:
    def __init__(self, ctx: ssl.SSLContext) -> None:
        self.ctx = ctx
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.seen: queue.Queue[Seen] = queue.Queue()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.settimeout(TIMEOUT)
            self.seen.put(self._serve(conn))

    def _serve(self, conn: socket.socket) -> Seen:
        try:
            tls = self.ctx.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError) as e:
            conn.close()
            return Seen(error=str(e))
        with tls:
            seen = Seen(
                version=tls.version(),
                cipher=tls.cipher()[0],
                alpn=tls.selected_alpn_protocol(),
                reused=tls.session_reused,
                client=peer_subject(tls),
            )
            with contextlib.suppress(ssl.SSLError, OSError):
                if tls.recv(4) == b"ping":
                    tls.sendall(b"pong")
        return seen

    def next_seen(self) -> Seen:
        return self.seen.get(timeout=TIMEOUT)

    def close(self) -> None:
        # close() alone does not wake a thread blocked in accept(); shutdown() does (Linux).
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive()


@contextlib.contextmanager
def serving(ctx: ssl.SSLContext) -> Iterator[Server]:
    server = Server(ctx)
    try:
        yield server
    finally:
        server.close()


@dataclass
class Got:
    """What the client saw of one connection."""

    names: list[str]
    subject: str
    version: str
    cipher: str
    alpn: str | None
    reused: bool
    session: ssl.SSLSession | None


def connect(
    port: int, ctx: ssl.SSLContext, sni: str | None, session: ssl.SSLSession | None = None
) -> Got:
    """Handshake, send ping, read pong (which also reads TLS 1.3 session tickets)."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw,
        ctx.wrap_socket(raw, server_hostname=sni, session=session) as tls,
    ):
        tls.sendall(b"ping")
        assert tls.recv(4) == b"pong"
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        cert = x509.load_der_x509_certificate(der)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return Got(
            names=san.get_values_for_type(x509.DNSName),
            subject=cert.subject.rfc4514_string(),
            version=tls.version() or "",
            cipher=tls.cipher()[0],
            alpn=tls.selected_alpn_protocol(),
            reused=tls.session_reused,
            session=tls.session,
        )


def client(
    ca: MiniCA | None = None,
    *,
    check_hostname: bool = True,
    max_version: ssl.TLSVersion | None = None,
    ciphers: str | None = None,
    alpn: list[str] | None = None,
    cert: Issued | None = None,
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.load_verify_locations(ca.ca_path)
        ctx.check_hostname = check_hostname
    if max_version is not None:
        ctx.maximum_version = max_version
    if ciphers is not None:
        ctx.set_ciphers(ciphers)
    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    if cert is not None:
        ctx.load_cert_chain(cert.cert_path, cert.key_path)
    return ctx


# -- certificates --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: MiniCA
    rogue: MiniCA
    a: CertPair  # a.example, EC P-256
    b: CertPair  # b.example, RSA 2048
    wild: CertPair  # *.w.example, Ed25519
    client: Issued
    rogue_client: Issued
    issued: dict[str, Issued]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    ca = MiniCA(tmp_path_factory.mktemp("ca"))
    rogue = MiniCA(tmp_path_factory.mktemp("rogue"), label="Rogue")
    issued = {
        "a": ca.issue("a", ("a.example",)),
        "b": ca.issue("b", ("b.example", "www.b.example"), key="rsa"),
        "wild": ca.issue("wild", ("*.w.example",), key="ed25519"),
    }
    a, b, wild = (load_pair(i.cert_path, i.key_path) for i in issued.values())
    return Pki(
        ca=ca,
        rogue=rogue,
        a=a,
        b=b,
        wild=wild,
        client=ca.issue("client", cn="client", org="Example", client=True),
        rogue_client=rogue.issue("intruder", cn="intruder", client=True),
        issued=issued,
    )


def all_pairs(pki: Pki) -> list[CertPair]:
    return [pki.a, pki.b, pki.wild]


# -- SNI -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sni", "names"),
    [
        ("a.example", ["a.example"]),
        ("b.example", ["b.example", "www.b.example"]),
        ("www.b.example", ["b.example", "www.b.example"]),
        ("x.w.example", ["*.w.example"]),
    ],
)
def test_sni_picks_the_certificate_covering_the_name(pki: Pki, sni: str, names: list[str]) -> None:
    with serving(server_context(all_pairs(pki))) as server:
        got = connect(server.port, client(pki.ca), sni)  # verifies chain and hostname
        assert got.names == names
        assert server.next_seen().error is None


@pytest.mark.parametrize("sni", [None, "unknown.example", "x.y.w.example", "w.example"])
def test_uncovered_names_get_the_default(pki: Pki, sni: str | None) -> None:
    with serving(server_context(all_pairs(pki))) as server:
        got = connect(server.port, client(pki.ca, check_hostname=False), sni)
        assert got.names == ["a.example"]  # first pair
    with serving(server_context(all_pairs(pki), default=pki.b)) as server:
        got = connect(server.port, client(pki.ca, check_hostname=False), sni)
        assert got.names == ["b.example", "www.b.example"]


def test_chain_is_sent_so_clients_trusting_only_the_root_verify(pki: Pki) -> None:
    with serving(server_context([pki.a])) as server:
        got = connect(server.port, client(pki.ca), "a.example")
        assert got.subject == "CN=a.example"


def test_selfsigned_certificate_verifies_by_name_and_ip(tmp_path: Path) -> None:
    made = generate_selfsigned(tmp_path / "self.pem", tmp_path / "self.key")
    trusting = ssl.create_default_context(cafile=made.cert_path)
    with serving(server_context([made])) as server:
        assert connect(server.port, trusting, "localhost").names == ["localhost"]
        assert connect(server.port, trusting, "127.0.0.1").names == ["localhost"]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
@pytest.mark.parametrize(
    ("servername", "subject"),
    [
        ("b.example", "CN = b.example"),
        ("q.w.example", "CN = *.w.example"),
        (None, "CN = a.example"),
    ],
)
def test_openssl_s_client_sees_the_right_subject(
    pki: Pki, servername: str | None, subject: str
) -> None:
    args = ["openssl", "s_client", "-connect", "127.0.0.1:{port}", "-brief"]
    args += ["-CAfile", str(pki.ca.ca_path), "-verify_return_error"]
    args += ["-servername", servername] if servername else ["-noservername"]
    with serving(server_context(all_pairs(pki))) as server:
        args[3] = args[3].format(port=server.port)
        out = subprocess.run(
            args, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10
        )
        assert server.next_seen().error is None
    report = out.stdout + out.stderr  # -brief writes its summary to stderr
    assert "CONNECTION ESTABLISHED" in report
    assert f"Peer certificate: {subject}" in report
    assert "Verification: OK" in report


# -- protocol versions and ciphers ---------------------------------------------------------------


def old_client(max_version: ssl.TLSVersion) -> ssl.SSLContext:
    with warnings.catch_warnings():  # the ssl module deprecates TLS 1.0/1.1 constants
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx = client(None, max_version=max_version)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
    # OpenSSL 3 will not even offer TLS < 1.2 at the default security level.
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    return ctx


def test_tls11_client_is_refused(pki: Pki) -> None:
    with serving(server_context(all_pairs(pki))) as server:
        with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION"):
            connect(server.port, old_client(ssl.TLSVersion.TLSv1_1), "a.example")
        # The server did get a TLS 1.1 hello and refused it: the client could offer 1.1.
        assert "UNSUPPORTED_PROTOCOL" in (server.next_seen().error or "")


def test_min_version_13_refuses_tls12(pki: Pki) -> None:
    with serving(server_context(all_pairs(pki), min_version="1.3")) as server:
        with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION"):
            connect(server.port, client(pki.ca, max_version=ssl.TLSVersion.TLSv1_2), "a.example")
        assert "UNSUPPORTED_PROTOCOL" in (server.next_seen().error or "")
        assert connect(server.port, client(pki.ca), "a.example").version == "TLSv1.3"


@pytest.mark.parametrize(
    ("sni", "cipher"),
    [
        ("a.example", "ECDHE-ECDSA-AES128-GCM-SHA256"),  # EC key
        ("b.example", "ECDHE-RSA-AES128-GCM-SHA256"),  # RSA key
        ("x.w.example", "ECDHE-ECDSA-AES128-GCM-SHA256"),  # Ed25519 signs ECDSA suites
    ],
)
def test_tls12_uses_ecdhe_aead_suites(pki: Pki, sni: str, cipher: str) -> None:
    with serving(server_context(all_pairs(pki))) as server:
        got = connect(server.port, client(pki.ca, max_version=ssl.TLSVersion.TLSv1_2), sni)
        assert (got.version, got.cipher) == ("TLSv1.2", cipher)
        assert got.cipher in TLS12_CIPHERS.split(":")


def test_tls12_refuses_cbc_and_rsa_key_exchange(pki: Pki) -> None:
    weak = "AES128-GCM-SHA256:AES256-SHA256:ECDHE-RSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA"
    ctx = client(pki.ca, max_version=ssl.TLSVersion.TLSv1_2, ciphers=weak)
    with serving(server_context(all_pairs(pki))) as server:
        with pytest.raises(ssl.SSLError, match="HANDSHAKE_FAILURE"):
            connect(server.port, ctx, "b.example")
        assert "NO_SHARED_CIPHER" in (server.next_seen().error or "")


def test_tls12_server_cipher_order_wins_unless_client_prefers_chacha(pki: Pki) -> None:
    tls12 = ssl.TLSVersion.TLSv1_2
    aes256_first = "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256"
    chacha_first = "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256"
    with serving(server_context(all_pairs(pki))) as server:
        got = connect(
            server.port, client(pki.ca, max_version=tls12, ciphers=aes256_first), "a.example"
        )
        assert got.cipher == "ECDHE-ECDSA-AES128-GCM-SHA256"
        got = connect(
            server.port, client(pki.ca, max_version=tls12, ciphers=chacha_first), "a.example"
        )
        assert got.cipher == "ECDHE-ECDSA-CHACHA20-POLY1305"


# -- ALPN ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("server_alpn", "client_alpn", "chosen"),
    [
        (("h2", "http/1.1"), ["h2", "http/1.1"], "h2"),
        (("h2", "http/1.1"), ["http/1.1", "h2"], "h2"),  # server preference
        (("h2", "http/1.1"), ["http/1.1"], "http/1.1"),
        (("http/1.1",), ["h2", "http/1.1"], "http/1.1"),  # the default offers HTTP/1.1 only
        (("http/1.1",), ["h2"], None),  # nothing in common: no ALPN, no alert
        ((), ["h2", "http/1.1"], None),
    ],
)
def test_alpn(
    pki: Pki, server_alpn: tuple[str, ...], client_alpn: list[str], chosen: str | None
) -> None:
    with serving(server_context(all_pairs(pki), alpn=server_alpn)) as server:
        # b.example: the protocol is chosen on the context SNI switched to.
        got = connect(server.port, client(pki.ca, alpn=client_alpn), "b.example")
        assert got.alpn == chosen
        assert server.next_seen().alpn == chosen


# -- mTLS ----------------------------------------------------------------------------------------


def mtls(pki: Pki, required: bool = True) -> ssl.SSLContext:
    return server_context(all_pairs(pki), client_ca=pki.ca.ca_path, client_cert_required=required)


@pytest.mark.parametrize("sni", ["a.example", "b.example"])  # default and switched context
def test_mtls_accepts_a_client_certificate(pki: Pki, sni: str) -> None:
    with serving(mtls(pki)) as server:
        connect(server.port, client(pki.ca, cert=pki.client), sni)
        assert server.next_seen().client == "CN=client,O=Example"


@pytest.mark.parametrize("sni", ["a.example", "b.example"])
def test_mtls_refuses_a_client_without_certificate(pki: Pki, sni: str) -> None:
    with serving(mtls(pki)) as server:
        # TLS 1.3: the client's handshake ends before the server checks; the refusal is an alert
        # the client reads in place of the answer.
        with pytest.raises(OSError):
            connect(server.port, client(pki.ca), sni)
        assert "PEER_DID_NOT_RETURN_A_CERTIFICATE" in (server.next_seen().error or "")


def test_mtls_refuses_a_certificate_from_another_ca(pki: Pki) -> None:
    with serving(mtls(pki)) as server:
        with pytest.raises(OSError):
            connect(server.port, client(pki.ca, cert=pki.rogue_client), "a.example")
        assert "CERTIFICATE_VERIFY_FAILED" in (server.next_seen().error or "")


def test_optional_client_certificate(pki: Pki) -> None:
    with serving(mtls(pki, required=False)) as server:
        connect(server.port, client(pki.ca), "a.example")
        assert server.next_seen().client is None
        connect(server.port, client(pki.ca, cert=pki.client), "a.example")
        assert server.next_seen().client == "CN=client,O=Example"


def test_no_client_ca_means_no_client_identity(pki: Pki) -> None:
    with serving(server_context(all_pairs(pki))) as server:
        connect(server.port, client(pki.ca, cert=pki.client), "a.example")
        assert server.next_seen().client is None


# -- session resumption --------------------------------------------------------------------------


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2])
@pytest.mark.parametrize("sni", ["a.example", "b.example"])  # default and switched context
def test_session_resumption(pki: Pki, version: ssl.TLSVersion, sni: str) -> None:
    ctx = client(pki.ca, max_version=version)
    with serving(server_context(all_pairs(pki))) as server:
        first = connect(server.port, ctx, sni)
        assert not first.reused and not server.next_seen().reused
        assert first.session is not None and first.session.has_ticket
        second = connect(server.port, ctx, sni, session=first.session)
        assert second.reused
        assert server.next_seen().reused
        assert second.names == first.names


# -- client_context (TLS to a pool's servers) ----------------------------------------------------


def test_client_context_verifies_against_ca_file(pki: Pki) -> None:
    with serving(server_context(all_pairs(pki))) as server:
        ctx = client_context(ca_file=pki.ca.ca_path, alpn=("h2", "http/1.1"))
        assert connect(server.port, ctx, "b.example").names == ["b.example", "www.b.example"]
        with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
            connect(server.port, ctx, "unknown.example")  # gets a.example's certificate


def test_client_context_refuses_untrusted_servers(pki: Pki) -> None:
    with serving(server_context(all_pairs(pki))) as server:
        for ctx in (client_context(ca_file=pki.rogue.ca_path), client_context()):
            with pytest.raises(ssl.SSLCertVerificationError):
                connect(server.port, ctx, "a.example")


def test_client_context_without_verification(pki: Pki) -> None:
    with serving(server_context(all_pairs(pki))) as server:
        ctx = client_context(verify=False, ca_file=pki.rogue.ca_path)
        assert connect(server.port, ctx, "unknown.example").names == ["a.example"]


def test_client_context_chain_only_accepts_any_name_the_ca_signed(pki: Pki) -> None:
    with serving(server_context(all_pairs(pki))) as server:
        ctx = client_context(ca_file=pki.ca.ca_path, verify="chain")
        assert connect(server.port, ctx, "unknown.example").names == ["a.example"]
        assert connect(server.port, ctx, "127.0.0.1").names == ["a.example"]  # no SNI sent
        with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
            connect(server.port, client_context(ca_file=pki.rogue.ca_path, verify="chain"), None)


def test_client_context_checks_a_given_name_whatever_the_sni(pki: Pki) -> None:
    with serving(server_context(all_pairs(pki))) as server:
        ctx = client_context(ca_file=pki.ca.ca_path, name="www.b.example")
        assert connect(server.port, ctx, "b.example").names == ["b.example", "www.b.example"]
        with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
            connect(server.port, ctx, "a.example")  # the SNI picks a.example's certificate
        by_ip = client_context(ca_file=pki.ca.ca_path, name="127.0.0.1")
        with pytest.raises(ssl.SSLCertVerificationError, match="IP address mismatch"):
            connect(server.port, by_ip, "a.example")
        rogue = client_context(ca_file=pki.rogue.ca_path, name="a.example")
        with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
            connect(server.port, rogue, "a.example")


def test_client_context_rejects_contradictory_arguments() -> None:
    with pytest.raises(ValueError, match="allowed name, chain, none"):
        client_context(verify="loose")
    for mode in ("chain", "none", False):
        with pytest.raises(ValueError, match="a name to verify needs verify='name'"):
            client_context(verify=mode, name="a.example")


def pool_tls(tls: str, servers: str = '"127.0.0.1:2"') -> PoolConfig:
    text = f'[listener.l]\nbind = "127.0.0.1:1"\npool = "p"\n[pool.p]\nservers = [{servers}]\n'
    return load_text(text + "[pool.p.tls]\n" + tls, "site.toml").pool("p")


def test_upstream_tls_picks_the_context_and_sni_per_server(pki: Pki) -> None:
    ca = f'ca_file = "{pki.ca.ca_path}"\n'
    up = upstream_tls(pool_tls(ca))
    assert up is not None and up.context.check_hostname  # the standard library checks the name
    assert up.connect_args("s", "127.0.0.1") == (up.context, "127.0.0.1")
    up = upstream_tls(pool_tls(ca + 'verify = "chain"\n'))
    assert up is not None and not up.context.check_hostname
    assert up.context.verify_mode == ssl.CERT_REQUIRED
    assert up.connect_args("s", "127.0.0.1") == (up.context, "127.0.0.1")
    up = upstream_tls(pool_tls(ca + 'verify_name = "a.example"\n'))
    assert up is not None and up.connect_args("s", "127.0.0.1") == (up.context, "a.example")
    servers = '{ address = "127.0.0.1:2", name = "one", verify_name = "b.example" }, "127.0.0.1:3"'
    up = upstream_tls(pool_tls(ca + 'sni = "front.example"\nverify_name = "a.example"\n', servers))
    assert up is not None and set(up.by_name) == {"a.example", "b.example"}
    assert up.connect_args("one", "127.0.0.1") == (up.by_name["b.example"], "front.example")
    assert up.connect_args("127.0.0.1:3", "127.0.0.1") == (up.by_name["a.example"], "front.example")
    with serving(server_context(all_pairs(pki))) as server:
        ctx, _ = up.connect_args("127.0.0.1:3", "127.0.0.1")
        assert connect(server.port, ctx, "unknown.example").names == ["a.example"]
        ctx, sni = up.connect_args("one", "127.0.0.1")
        with pytest.raises(ssl.SSLCertVerificationError) as err:
            connect(server.port, ctx, sni)
        why = up.failure(err.value, "one", "127.0.0.1")
        assert why == "certificate verify failed: not valid for the name 'b.example'"


def test_upstream_tls_failure_says_what_to_set_for_an_address(pki: Pki) -> None:
    up = upstream_tls(pool_tls(f'ca_file = "{pki.ca.ca_path}"\n'))
    assert up is not None
    with serving(server_context(all_pairs(pki))) as server:
        ctx, sni = up.connect_args("s", "127.0.0.1")
        with pytest.raises(ssl.SSLCertVerificationError) as err:
            connect(server.port, ctx, sni)
    assert up.failure(err.value, "s", "127.0.0.1") == (
        "certificate verify failed: not valid for the address '127.0.0.1' "
        '(set verify_name, or verify = "chain")'
    )


def test_client_context_presents_a_client_certificate_and_alpn(pki: Pki) -> None:
    server_ctx = server_context(
        all_pairs(pki),
        alpn=("h2", "http/1.1"),
        client_ca=pki.ca.ca_path,
        client_cert_required=True,
    )
    ctx = client_context(
        ca_file=pki.ca.ca_path,
        cert=pki.client.cert_path,
        key=pki.client.key_path,
        alpn=("h2",),
    )
    with serving(server_ctx) as server:
        assert connect(server.port, ctx, "a.example").alpn == "h2"
        assert server.next_seen().client == "CN=client,O=Example"


def test_client_context_file_errors_name_the_file(pki: Pki, tmp_path: Path) -> None:
    missing = tmp_path / "missing-ca.pem"
    with pytest.raises(CertError) as err:
        client_context(ca_file=missing)
    assert err.value.file == str(missing)
    assert str(err.value).startswith(f"{missing}: cannot read")
    with pytest.raises(CertError) as err:
        client_context(cert=pki.client.cert_path, key=pki.issued["a"].key_path)
    assert err.value.file == str(pki.issued["a"].key_path)


# -- server_context argument and file errors -----------------------------------------------------


def test_server_context_rejects_bad_arguments(pki: Pki) -> None:
    with pytest.raises(ValueError, match=r"allowed 1\.2, 1\.3"):
        server_context([pki.a], min_version="1.1")
    with pytest.raises(ValueError, match="client_ca"):
        server_context([pki.a], client_cert_required=True)
    with pytest.raises(ValueError):
        server_context([])


def test_server_context_client_ca_errors_name_the_file(pki: Pki, tmp_path: Path) -> None:
    missing = tmp_path / "clients.pem"
    with pytest.raises(CertError) as err:
        server_context([pki.a], client_ca=missing)
    assert str(err.value).startswith(f"{missing}: cannot read")
    junk = tmp_path / "junk-ca.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(CertError) as err:
        server_context([pki.a], client_ca=junk)
    assert str(err.value).startswith(f"{junk}: not a PEM CA certificate file")


def test_server_context_reports_a_pair_file_gone_since_loading(pki: Pki, tmp_path: Path) -> None:
    made = generate_selfsigned(tmp_path / "gone.pem", tmp_path / "gone.key")
    (tmp_path / "gone.pem").unlink()
    with pytest.raises(CertError) as err:
        server_context([made])
    assert err.value.file == made.cert_path


# -- OCSP ----------------------------------------------------------------------------------------


def ocsp_der(
    ca: MiniCA,
    leaf: x509.Certificate,
    *,
    status: ocsp.OCSPCertStatus = ocsp.OCSPCertStatus.GOOD,
    next_update: dt.datetime = NOW + dt.timedelta(days=7),
) -> bytes:
    revoked = status == ocsp.OCSPCertStatus.REVOKED
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response(
            cert=leaf,
            issuer=ca.inter,
            algorithm=hashes.SHA256(),
            cert_status=status,
            this_update=NOW - dt.timedelta(hours=1),
            next_update=next_update,
            revocation_time=NOW - dt.timedelta(days=1) if revoked else None,
            revocation_reason=None,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, ca.inter)
    )
    return builder.sign(ca.inter_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_ocsp_response_loads(pki: Pki, tmp_path: Path) -> None:
    a = pki.issued["a"]
    der = ocsp_der(pki.ca, a.cert)
    path = write(tmp_path / "a.ocsp", der)
    assert load_ocsp_response(path) == der
    assert load_ocsp_response(path, cert_path=a.cert_path) == der


def test_ocsp_errors_name_the_file(pki: Pki, tmp_path: Path) -> None:
    a, b = pki.issued["a"], pki.issued["b"]
    cases: list[tuple[Path, str, dict[str, object]]] = [
        (tmp_path / "missing.ocsp", "cannot read", {}),
        (write(tmp_path / "junk.ocsp", b"junk"), "not a DER OCSP response", {}),
        (write(tmp_path / "pem.ocsp", b"-----BEGIN X-----\n"), "this is PEM", {}),
        (
            write(
                tmp_path / "unauth.ocsp",
                ocsp.OCSPResponseBuilder.build_unsuccessful(
                    ocsp.OCSPResponseStatus.UNAUTHORIZED
                ).public_bytes(serialization.Encoding.DER),
            ),
            "answered unauthorized",
            {},
        ),
        (
            write(
                tmp_path / "revoked.ocsp",
                ocsp_der(pki.ca, a.cert, status=ocsp.OCSPCertStatus.REVOKED),
            ),
            "revoked",
            {},
        ),
        (
            write(
                tmp_path / "stale.ocsp",
                ocsp_der(pki.ca, a.cert, next_update=NOW - dt.timedelta(hours=1)),
            ),
            "OCSP response expired on",
            {},
        ),
        (
            write(tmp_path / "other.ocsp", ocsp_der(pki.ca, b.cert)),
            f"not about the certificate in {a.cert_path}",
            {"cert_path": a.cert_path},
        ),
    ]
    for path, words, kwargs in cases:
        with pytest.raises(CertError) as err:
            load_ocsp_response(path, **kwargs)  # type: ignore[arg-type]
        assert err.value.file == str(path)
        assert str(err.value).startswith(f"{path}: ")
        assert words in str(err.value)


def test_server_context_validates_and_staples_ocsp_files(
    pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a = pki.issued["a"]
    good = write(tmp_path / "a.ocsp", ocsp_der(pki.ca, a.cert))
    with caplog.at_level(logging.WARNING, logger="l4lb"):
        ctx = server_context(all_pairs(pki), ocsp_response_files={pki.a.cert_path: good})
    assert "not stapled" not in caplog.text  # this CPython's ssl can be reached
    assert ctx is not None
    wrong = write(tmp_path / "b.ocsp", ocsp_der(pki.ca, pki.issued["b"].cert))
    with pytest.raises(CertError) as err:
        server_context(all_pairs(pki), ocsp_response_files={pki.a.cert_path: wrong})
    assert err.value.file == str(wrong)
    with pytest.raises(CertError, match=r"no certificate elsewhere\.pem on this listener"):
        server_context(all_pairs(pki), ocsp_response_files={"elsewhere.pem": good})
