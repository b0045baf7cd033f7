"""TLS termination and upstream TLS, end to end with ssl, curl and openssl clients."""

from __future__ import annotations

import socket
import ssl
import subprocess
from pathlib import Path

import pytest

from tests.e2e.helpers import TlsBackend, free_port, make_cert, pool_toml


def make_ca_and_client(tmp) -> tuple[str, str, str]:
    """A CA, and a client certificate it signs (CN=client-one)."""
    ca_key, ca_crt = tmp / "ca.key", tmp / "ca.crt"
    key, csr, crt = tmp / "client.key", tmp / "client.csr", tmp / "client.crt"

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)

    run(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca_crt),
    )
    run(
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=client-one",
        "-keyout",
        str(key),
        "-out",
        str(csr),
    )
    run(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca_crt),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        str(crt),
    )
    return str(ca_crt), str(crt), str(key)


def tls_listener(port: int, certs: list[tuple[str, str]], extra: str = "") -> str:
    text = f'[listener.tls]\nbind = "127.0.0.1:{port}"\nprotocol = "tls"\npool = "p"\n{extra}\n'
    for cert, key in certs:
        text += f'[[listener.tls.certs]]\ncert = "{cert}"\nkey = "{key}"\n'
    return text


@pytest.fixture
def two_certs(tmp_path):
    return {name: make_cert(tmp_path, name) for name in ("a.test", "b.test")}


def client(cafile: str, **kw) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cafile)
    for key, value in kw.items():
        setattr(ctx, key, value)
    return ctx


def talk(port: int, ctx: ssl.SSLContext, name: str | None, session=None):
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    tls = ctx.wrap_socket(raw, server_hostname=name, session=session)
    line = tls.recv(100)
    tls.sendall(b"echo me")
    assert tls.recv(100) == b"echo me"
    return tls, line.decode().strip()


def test_sni_selects_the_certificate_and_bytes_flow(proxy, backends, two_certs):
    (b,) = backends("plain")
    port = free_port()
    proxy(tls_listener(port, list(two_certs.values())) + pool_toml("p", [b]))
    for name, (cert, _) in two_certs.items():
        tls, line = talk(port, client(cert), name)  # verifies the chain and the name
        assert line == "plain"
        assert dict(x[0] for x in tls.getpeercert()["subject"])["commonName"] == name
        tls.close()


def test_curl_through_tls_listener(proxy, backends, two_certs):
    (b,) = backends("web", mode="http")
    port = free_port()
    proxy(tls_listener(port, list(two_certs.values())) + pool_toml("p", [b]))
    cert = two_certs["b.test"][0]
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "--resolve",
            f"b.test:{port}:127.0.0.1",
            "--cacert",
            cert,
            f"https://b.test:{port}/",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "web\n"


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated")
def test_old_protocols_are_refused(proxy, backends, two_certs):
    (b,) = backends("plain")
    port = free_port()
    p = proxy(tls_listener(port, list(two_certs.values())) + pool_toml("p", [b]))
    ctx = client(two_certs["a.test"][0])
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    try:
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    except ssl.SSLError:
        pass
    with pytest.raises((ssl.SSLError, ConnectionError)):
        talk(port, ctx, "a.test")
    assert p.wait_log(r"end=tls_handshake_failed")
    tls, _ = talk(port, client(two_certs["a.test"][0]), "a.test")  # others unaffected
    assert tls.version() in ("TLSv1.2", "TLSv1.3")
    tls.close()


def test_alpn_and_resumption(proxy, backends, two_certs):
    (b,) = backends("plain")
    port = free_port()
    proxy(
        tls_listener(port, list(two_certs.values()), 'alpn = ["h2", "http/1.1"]')
        + pool_toml("p", [b])
    )
    ctx = client(two_certs["a.test"][0])
    ctx.set_alpn_protocols(["http/1.1", "h2"])
    first, _ = talk(port, ctx, "a.test")
    assert first.selected_alpn_protocol() == "h2"  # the server's preference
    session = first.session
    first.close()
    second, _ = talk(port, ctx, "a.test", session=session)
    assert second.session_reused
    second.close()


def test_client_certificates(proxy, backends, two_certs, tmp_path):
    (b,) = backends("plain")
    ca, crt, key = make_ca_and_client(tmp_path)
    port = free_port()
    p = proxy(
        tls_listener(port, [two_certs["a.test"]], f'client_ca = "{ca}"\nclient_cert = "required"')
        + pool_toml("p", [b])
    )
    ctx = client(two_certs["a.test"][0])
    ctx.load_cert_chain(crt, key)
    tls, line = talk(port, ctx, "a.test")
    assert line == "plain"
    tls.close()
    assert p.wait_log(r'client_cert="CN=client-one"')
    with pytest.raises((ssl.SSLError, ConnectionError)):
        talk(port, client(two_certs["a.test"][0]), "a.test")
    assert p.wait_log(r"end=tls_handshake_failed")


def test_selfsigned_certificate_is_made_at_first_run(proxy, backends, tmp_path):
    (b,) = backends("plain")
    port = free_port()
    cert, key = tmp_path / "var" / "demo.crt", tmp_path / "var" / "demo.key"
    config = (
        f'[listener.tls]\nbind = "127.0.0.1:{port}"\nprotocol = "tls"\npool = "p"\n'
        f'[[listener.tls.certs]]\ncert = "{cert}"\nkey = "{key}"\nselfsigned = true\n'
        + pool_toml("p", [b])
    )
    proxy(config)
    assert cert.exists() and key.exists()
    tls, line = talk(port, client(str(cert)), "localhost")
    assert line == "plain"
    tls.close()


def test_bad_certificate_is_a_config_error(tmp_path):
    cert, _key = make_cert(tmp_path, "a.test")
    _, other_key = make_cert(tmp_path, "b.test")
    path = tmp_path / "bad.toml"
    path.write_text(tls_listener(1, [(cert, other_key)]) + '[pool.p]\nservers = ["127.0.0.1:1"]\n')
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "l4lb", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "listener.tls.certs[0].cert" in result.stderr and "b.test.key" in result.stderr


def test_pool_speaks_tls_to_its_servers(proxy, tmp_path):
    cert, key = make_cert(tmp_path, "a.test")
    backend = TlsBackend("secure", cert, key)
    try:
        port = free_port()
        proxy(
            f'[listener.l]\nbind = "127.0.0.1:{port}"\npool = "p"\n'
            + pool_toml(
                "p",
                [f'address = "{backend.address}"'],
                tls={"ca_file": f'"{cert}"', "sni": '"a.test"'},
            )
        )
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            assert s.recv(100) == b"secure\n"  # decrypted by l4lb
            s.sendall(b"hello")
            assert s.recv(100) == b"hello"
    finally:
        backend.close()


def test_sslyze_finds_nothing_old_or_weak(proxy, backends, tmp_path):
    """The default TLS settings, scanned by sslyze (installed by ./scripts/setup)."""
    import json
    from pathlib import Path

    sslyze = Path(__file__).parents[2] / ".venv-sslyze" / "bin" / "sslyze"
    if not sslyze.exists():
        pytest.fail("sslyze is missing: run ./scripts/setup")
    (b,) = backends("plain")
    port = free_port()
    cert, key = tmp_path / "s.crt", tmp_path / "s.key"
    proxy(
        f'[listener.tls]\nbind = "127.0.0.1:{port}"\nprotocol = "tls"\npool = "p"\n'
        f'[[listener.tls.certs]]\ncert = "{cert}"\nkey = "{key}"\nselfsigned = true\n'
        + pool_toml("p", [b])
    )
    out = tmp_path / "scan.json"
    subprocess.run(
        [
            str(sslyze),
            "--sslv2",
            "--sslv3",
            "--tlsv1",
            "--tlsv1_1",
            "--tlsv1_2",
            "--tlsv1_3",
            "--reneg",
            "--json_out",
            str(out),
            f"127.0.0.1:{port}",
        ],
        check=True,
        capture_output=True,
        timeout=120,
        cwd=tmp_path,
    )
    result = json.loads(out.read_text())["server_scan_results"][0]["scan_result"]

    def accepted(key: str) -> list[str]:
        scan = result[key]
        assert scan["status"] == "COMPLETED", scan
        return [c["cipher_suite"]["name"] for c in scan["result"]["accepted_cipher_suites"]]

    for old in ("ssl_2_0", "ssl_3_0", "tls_1_0", "tls_1_1"):
        assert accepted(f"{old}_cipher_suites") == []
    tls12 = accepted("tls_1_2_cipher_suites")
    assert tls12 and all(
        name.startswith("TLS_ECDHE_") and ("_GCM_" in name or "CHACHA20" in name) for name in tls12
    ), tls12
    assert accepted("tls_1_3_cipher_suites")
    reneg = result["session_renegotiation"]["result"]
    assert not reneg["is_vulnerable_to_client_renegotiation_dos"]


def test_certificates_reload_on_sighup(proxy, backends, tmp_path):
    (b,) = backends("plain")
    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    old_dir.mkdir()
    new_dir.mkdir()
    old, new = make_cert(old_dir, "a.test"), make_cert(new_dir, "a.test")
    live_cert, live_key = tmp_path / "live.crt", tmp_path / "live.key"
    live_cert.write_bytes(Path(old[0]).read_bytes())
    live_key.write_bytes(Path(old[1]).read_bytes())
    port = free_port()
    config = tls_listener(port, [(str(live_cert), str(live_key))]) + pool_toml("p", [b])
    p = proxy(config)
    held, _ = talk(port, client(old[0]), "a.test")
    live_cert.write_bytes(Path(new[0]).read_bytes())
    live_key.write_bytes(Path(new[1]).read_bytes())
    assert p.reload(config)
    tls, _ = talk(port, client(new[0]), "a.test")  # verifies only against the new cert
    tls.close()
    with pytest.raises(ssl.SSLCertVerificationError):
        talk(port, client(old[0]), "a.test")
    held.sendall(b"still")  # the connection made before the reload goes on
    assert held.recv(10) == b"still"
    held.close()


def test_accept_proxy_on_tls_listener(proxy, backends, two_certs):
    (b,) = backends("plain")
    port = free_port()
    p = proxy(
        tls_listener(port, [two_certs["a.test"]], "accept_proxy = true") + pool_toml("p", [b])
    )
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    raw.sendall(b"PROXY TCP4 203.0.113.9 192.0.2.1 5555 443\r\n")
    tls = client(two_certs["a.test"][0]).wrap_socket(raw, server_hostname="a.test")
    assert tls.recv(100) == b"plain\n"
    tls.close()
    assert p.wait_log(r"203\.0\.113\.9:5555 tls p/plain")


def test_ocsp_response_is_stapled(proxy, backends, tmp_path):
    """A CA, a leaf it signs and an OCSP response for the leaf: openssl -status sees it."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509 import ocsp
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key, leaf_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("ocsp-ca"))
        .issuer_name(name("ocsp-ca"))
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(name("a.test"))
        .issuer_name(ca.subject)
        .public_key(leaf_key.public_key())
        .serial_number(2)
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("a.test")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    response = (
        ocsp.OCSPResponseBuilder()
        .add_response(
            cert=leaf,
            issuer=ca,
            algorithm=hashes.SHA1(),
            cert_status=ocsp.OCSPCertStatus.GOOD,
            this_update=now,
            next_update=now + dt.timedelta(days=1),
            revocation_time=None,
            revocation_reason=None,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, ca)
        .sign(ca_key, hashes.SHA256())
    )
    cert, key, staple = tmp_path / "leaf.pem", tmp_path / "leaf.key", tmp_path / "leaf.ocsp"
    cert.write_bytes(
        leaf.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM)
    )
    key.write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    staple.write_bytes(response.public_bytes(serialization.Encoding.DER))
    (b,) = backends("plain")
    port = free_port()
    proxy(
        f'[listener.tls]\nbind = "127.0.0.1:{port}"\nprotocol = "tls"\npool = "p"\n'
        f'[[listener.tls.certs]]\ncert = "{cert}"\nkey = "{key}"\nocsp = "{staple}"\n'
        + pool_toml("p", [b])
    )
    out = subprocess.run(
        [
            "openssl",
            "s_client",
            "-connect",
            f"127.0.0.1:{port}",
            "-servername",
            "a.test",
            "-status",
        ],
        input=b"",
        capture_output=True,
        timeout=30,
    ).stdout.decode()
    assert "OCSP Response Status: successful" in out
    assert "Cert Status: good" in out


def test_pool_presents_a_client_certificate(proxy, tmp_path):
    cert, key = make_cert(tmp_path, "a.test")
    ca, client_crt, client_key = make_ca_and_client(tmp_path)
    backend = TlsBackend("strict", cert, key, client_ca=ca)
    try:
        port, other = free_port(), free_port()
        tls = {"ca_file": f'"{cert}"', "sni": '"a.test"'}
        proxy(
            f'[listener.l]\nbind = "127.0.0.1:{port}"\npool = "p"\n'
            + pool_toml(
                "p",
                [f'address = "{backend.address}"'],
                tls={**tls, "cert": f'"{client_crt}"', "key": f'"{client_key}"'},
            )
            + f'[listener.m]\nbind = "127.0.0.1:{other}"\npool = "q"\n'
            + pool_toml("q", [f'address = "{backend.address}"'], tls=tls)
        )
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            assert s.recv(100) == b"strict\n"  # the server accepted l4lb's certificate
        with socket.create_connection(("127.0.0.1", other), timeout=5) as s:
            assert s.recv(100) == b""  # without one, the server refuses the handshake
    finally:
        backend.close()
