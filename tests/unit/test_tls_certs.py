"""load_pair, CertSelector and generate_selfsigned on real certificates made in tmp_path.

`MiniCA` (a root and an intermediate that issue leaf certificates) is also used by
test_tls_context.py.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given
from hypothesis import strategies as st

from l4lb.tls.certs import CertError, CertPair, CertSelector, generate_selfsigned, load_pair

UTC = dt.UTC
NOW = dt.datetime.now(UTC).replace(microsecond=0)
DAY = dt.timedelta(days=1)

# -- a small PKI ---------------------------------------------------------------------------------

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


def new_key(kind: str = "ec") -> PrivateKey:
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "rsa1024":
        return rsa.generate_private_key(public_exponent=65537, key_size=1024)
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(kind)


def key_pem(key: PrivateKey, password: bytes | None = None) -> bytes:
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)] if org else []
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass(frozen=True)
class Issued:
    cert_path: Path
    key_path: Path
    cert: x509.Certificate
    key: PrivateKey


class MiniCA:
    """A root CA and an intermediate; leaf files hold the leaf then the intermediate."""

    def __init__(self, directory: Path, label: str = "Test") -> None:
        self.dir = directory
        self.root_key = new_key()
        self.root = self._sign(name(f"{label} Root CA"), self.root_key, None, ca=True)
        self.inter_key = new_key()
        self.inter = self._sign(name(f"{label} Intermediate CA"), self.inter_key, self, ca=True)
        self.ca_path = directory / f"{label.lower()}-root.pem"
        self.ca_path.write_bytes(pem(self.root))

    def _sign(
        self,
        subject: x509.Name,
        key: PrivateKey,
        issuer: MiniCA | None,
        *,
        ca: bool = False,
        names: tuple[str, ...] = (),
        not_before: dt.datetime = NOW - DAY,
        not_after: dt.datetime = NOW + 30 * DAY,
        client: bool = False,
    ) -> x509.Certificate:
        signer_key = issuer.inter_key if issuer and not ca else issuer.root_key if issuer else key
        signer_name = (
            issuer.inter.subject
            if issuer and not ca
            else issuer.root.subject
            if issuer
            else subject
        )
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key())
        b = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(signer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(aki, critical=False)
        )
        if ca:
            usage = dict.fromkeys(
                [
                    "content_commitment",
                    "key_encipherment",
                    "data_encipherment",
                    "key_agreement",
                    "encipher_only",
                    "decipher_only",
                ],
                False,
            )
            b = b.add_extension(
                x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, **usage),
                critical=True,
            )
        else:
            eku = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
            b = b.add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
            if names:
                sans = [x509.DNSName(n) for n in names]
                b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return b.sign(signer_key, hashes.SHA256())

    def issue(
        self,
        stem: str,
        names: tuple[str, ...] = (),
        *,
        cn: str | None = None,
        org: str | None = None,
        key: str = "ec",
        not_before: dt.datetime = NOW - DAY,
        not_after: dt.datetime = NOW + 30 * DAY,
        client: bool = False,
    ) -> Issued:
        """Write `stem.pem` (leaf + intermediate) and `stem.key`."""
        private = new_key(key)
        subject = name(cn or (names[0] if names else stem), org)
        cert = self._sign(
            subject,
            private,
            self,
            names=names,
            not_before=not_before,
            not_after=not_after,
            client=client,
        )
        cert_path, key_path = self.dir / f"{stem}.pem", self.dir / f"{stem}.key"
        cert_path.write_bytes(pem(cert, self.inter))
        key_path.write_bytes(key_pem(private))
        return Issued(cert_path, key_path, cert, private)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> MiniCA:
    return MiniCA(tmp_path_factory.mktemp("pki"))


# -- load_pair -----------------------------------------------------------------------------------


def test_load_pair_reads_chain_names_and_dates(ca: MiniCA) -> None:
    site = ca.issue("site", ("WWW.Example.COM", "example.com.", "*.api.example.com"))
    pair = load_pair(site.cert_path, site.key_path)
    assert pair.cert_path == str(site.cert_path)
    assert pair.key_path == str(site.key_path)
    assert pair.names == ("www.example.com", "example.com", "*.api.example.com")
    assert pair.chain_length == 2
    assert pair.not_after == NOW + 30 * DAY
    assert pair.subject == "CN=WWW.Example.COM"


def test_names_fall_back_to_cn_only_without_san(ca: MiniCA) -> None:
    legacy = ca.issue("legacy", (), cn="Legacy.Example.NET")
    assert load_pair(legacy.cert_path, legacy.key_path).names == ("legacy.example.net",)
    both = ca.issue("both", ("san.example",), cn="cn.example")
    assert load_pair(both.cert_path, both.key_path).names == ("san.example",)


@pytest.mark.parametrize("kind", ["ec", "rsa", "ed25519"])
def test_key_types(ca: MiniCA, kind: str) -> None:
    issued = ca.issue(f"k-{kind}", (f"{kind}.example",), key=kind)
    assert load_pair(issued.cert_path, issued.key_path).names == (f"{kind}.example",)


def test_combined_pem_holds_chain_and_key(ca: MiniCA, tmp_path: Path) -> None:
    issued = ca.issue("combo", ("combo.example",))
    combined = tmp_path / "combined.pem"
    combined.write_bytes(issued.cert_path.read_bytes() + issued.key_path.read_bytes())
    pair = load_pair(combined, combined)
    assert pair.chain_length == 2
    assert pair.key_path == str(combined)


def test_now_decides_validity(ca: MiniCA) -> None:
    issued = ca.issue("window", ("w.example",))
    load_pair(issued.cert_path, issued.key_path, now=NOW)
    with pytest.raises(CertError, match="expired on"):
        load_pair(issued.cert_path, issued.key_path, now=NOW + 31 * DAY)
    with pytest.raises(CertError, match="not valid before"):
        load_pair(issued.cert_path, issued.key_path, now=NOW - 2 * DAY)


# -- every CertError names its file --------------------------------------------------------------


def assert_names_file(err: pytest.ExceptionInfo[CertError], path: Path, *words: str) -> None:
    assert err.value.file == str(path)
    assert str(err.value).startswith(f"{path}: ")
    for word in words:
        assert word in str(err.value)


def test_expired_certificate(ca: MiniCA) -> None:
    old = ca.issue(
        "expired",
        ("old.example",),
        not_before=dt.datetime(2024, 1, 1, tzinfo=UTC),
        not_after=dt.datetime(2025, 1, 1, tzinfo=UTC),
    )
    with pytest.raises(CertError) as err:
        load_pair(old.cert_path, old.key_path)
    assert_names_file(err, old.cert_path, "certificate expired on 2025-01-01")


def test_not_yet_valid_certificate(ca: MiniCA) -> None:
    future = ca.issue("future", ("f.example",), not_before=NOW + DAY)
    with pytest.raises(CertError) as err:
        load_pair(future.cert_path, future.key_path)
    assert_names_file(err, future.cert_path, "not valid before")


def test_key_does_not_match_certificate(ca: MiniCA) -> None:
    a = ca.issue("mis-a", ("a.example",))
    b = ca.issue("mis-b", ("b.example",))
    with pytest.raises(CertError) as err:
        load_pair(a.cert_path, b.key_path)
    assert_names_file(err, b.key_path, "does not match", str(a.cert_path))


def test_missing_files(ca: MiniCA, tmp_path: Path) -> None:
    issued = ca.issue("exists", ("e.example",))
    missing = tmp_path / "nope.pem"
    with pytest.raises(CertError) as err:
        load_pair(missing, issued.key_path)
    assert_names_file(err, missing, "cannot read", "No such file")
    with pytest.raises(CertError) as err:
        load_pair(issued.cert_path, missing)
    assert_names_file(err, missing, "cannot read", "No such file")


def test_not_pem_certificate(ca: MiniCA, tmp_path: Path) -> None:
    issued = ca.issue("np", ("np.example",))
    junk = tmp_path / "junk.pem"
    junk.write_text("hello\n")
    with pytest.raises(CertError) as err:
        load_pair(junk, issued.key_path)
    assert_names_file(err, junk, "not a PEM certificate")
    # A key given where the certificate belongs is "not a PEM certificate" too.
    with pytest.raises(CertError) as err:
        load_pair(issued.key_path, issued.key_path)
    assert_names_file(err, issued.key_path, "not a PEM certificate")


def test_der_certificate_gets_a_conversion_hint(ca: MiniCA, tmp_path: Path) -> None:
    issued = ca.issue("der", ("der.example",))
    der = tmp_path / "cert.der"
    der.write_bytes(issued.cert.public_bytes(serialization.Encoding.DER))
    with pytest.raises(CertError) as err:
        load_pair(der, issued.key_path)
    assert_names_file(err, der, "this is DER", "openssl x509 -inform der")


def test_malformed_pem_certificate(ca: MiniCA, tmp_path: Path) -> None:
    issued = ca.issue("bad", ("bad.example",))
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(CertError) as err:
        load_pair(broken, issued.key_path)
    assert_names_file(err, broken, "malformed PEM certificate")


def test_not_a_key(ca: MiniCA) -> None:
    issued = ca.issue("nokey", ("nk.example",))
    with pytest.raises(CertError) as err:
        load_pair(issued.cert_path, issued.cert_path)
    assert_names_file(err, issued.cert_path, "not a PEM private key")


def test_encrypted_key(ca: MiniCA, tmp_path: Path) -> None:
    issued = ca.issue("enc", ("enc.example",))
    locked = tmp_path / "locked.key"
    locked.write_bytes(key_pem(issued.key, password=b"secret"))
    with pytest.raises(CertError) as err:
        load_pair(issued.cert_path, locked)
    assert_names_file(err, locked, "encrypted")


def test_weak_rsa_key(ca: MiniCA) -> None:
    weak = ca.issue("weak", ("weak.example",), key="rsa1024")
    with pytest.raises(CertError) as err:
        load_pair(weak.cert_path, weak.key_path)
    assert_names_file(err, weak.key_path, "1024 bits", "2048")


def test_chain_out_of_order(ca: MiniCA, tmp_path: Path) -> None:
    issued = ca.issue("order", ("order.example",))
    reversed_chain = tmp_path / "reversed.pem"
    reversed_chain.write_bytes(pem(ca.inter, issued.cert))
    with pytest.raises(CertError) as err:
        load_pair(reversed_chain, issued.key_path)
    assert_names_file(err, reversed_chain, "chain out of order", "leaf first")


# -- CertSelector --------------------------------------------------------------------------------


def pair(*names: str) -> CertPair:
    stem = names[0].replace("*", "star") if names else "none"
    return CertPair(f"{stem}.pem", f"{stem}.key", names, NOW, 1)


A = pair("a.example.com")
B = pair("b.example.com", "b.example.org")
WILD = pair("*.example.com")
OTHER = pair("other.test")


def test_select_exact_name() -> None:
    s = CertSelector([A, B, WILD])
    assert s.select("a.example.com") is A
    assert s.select("b.example.org") is B


def test_exact_beats_wildcard_whatever_the_order() -> None:
    s = CertSelector([WILD, A])
    assert s.select("a.example.com") is A
    assert s.select("z.example.com") is WILD


def test_wildcard_covers_exactly_one_label() -> None:
    s = CertSelector([OTHER, WILD])
    assert s.match("x.example.com") is WILD
    assert s.match("a.b.example.com") is None
    assert s.match("example.com") is None
    assert s.match(".example.com") is None
    assert s.select("a.b.example.com") is OTHER


def test_partial_wildcards_match_nothing() -> None:
    s = CertSelector([pair("w*.example.com")])
    assert s.match("www.example.com") is None


def test_default_is_first_pair_unless_given() -> None:
    assert CertSelector([A, B]).select(None) is A
    assert CertSelector([A, B]).select("unknown.test") is A
    assert CertSelector([A, B], default=B).select(None) is B
    assert CertSelector([A, B], default=B).select("") is B


def test_names_compare_case_insensitively_and_without_trailing_dot() -> None:
    s = CertSelector([A, WILD])
    assert s.select("A.Example.COM.") is A
    assert s.select("Z.EXAMPLE.com") is WILD


def test_first_pair_listing_a_name_wins() -> None:
    other_a = pair("a.example.com", "x.test")
    assert CertSelector([A, other_a]).select("a.example.com") is A


def test_no_pairs_is_a_bug() -> None:
    with pytest.raises(ValueError):
        CertSelector([])


label = st.text(alphabet="abcxyz0-", min_size=1, max_size=6)


@given(labels=st.lists(label, min_size=1, max_size=4))
def test_wildcard_property(labels: list[str]) -> None:
    s = CertSelector([OTHER, WILD])
    sni = ".".join([*labels, "example", "com"])
    expected = WILD if len(labels) == 1 else OTHER
    assert s.select(sni) is expected


# -- generate_selfsigned -------------------------------------------------------------------------


def test_generate_selfsigned(tmp_path: Path) -> None:
    cert_path, key_path = tmp_path / "demo.pem", tmp_path / "demo.key"
    key_path.write_text("old")
    key_path.chmod(0o644)
    made = generate_selfsigned(cert_path, key_path, names=("localhost", "demo.test"), days=10)
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    assert made.names == ("localhost", "demo.test")
    assert made.chain_length == 1
    assert made == load_pair(cert_path, key_path)
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert cert.issuer == cert.subject
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    assert dt.timedelta(days=9) < made.not_after - NOW < dt.timedelta(days=11)


def test_generate_selfsigned_reports_unwritable_paths(tmp_path: Path) -> None:
    target = tmp_path / "no-such-dir" / "k.pem"
    with pytest.raises(CertError) as err:
        generate_selfsigned(tmp_path / "c.pem", target)
    assert_names_file(err, target, "cannot write")
