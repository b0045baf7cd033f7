"""Certificates for TLS termination: load and check them, pick one by SNI, make a self-signed one.

A `tls` or `https` listener serves one or more certificate pairs (a PEM chain and its private
key). This module is the part that looks at files and names; `l4lb.tls.context` turns pairs into
`ssl.SSLContext` objects.

- `load_pair(cert_path, key_path)` reads and checks a pair and returns a `CertPair`, or raises
  `CertError` naming the file and saying what is wrong. It catches at startup or reload what
  would otherwise fail every handshake later: an expired leaf, a key that belongs to another
  certificate, a chain in the wrong order, an encrypted key, a key too weak for OpenSSL.
- `CertSelector(pairs, default)` decides which pair answers a ClientHello's SNI name (RFC 6066
  §3). It is pure: no IO, no clock.
- `generate_selfsigned(...)` writes an EC P-256 key and a self-signed certificate, for the demo
  and `l4lb cert selfsigned`.

Name matching follows RFC 6125 §6.4.3 (and the CA/Browser Forum rules certificates are issued
under): a wildcard is only a whole left-most label, and it covers exactly one label, so
`*.example.com` answers `a.example.com` but neither `a.b.example.com` nor `example.com`. This is
stricter than SNI *routing* (`l4lb.sni`), on purpose: serving a certificate for a name it does
not cover only earns the client a verification error.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import itertools
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from l4lb.errors import L4lbError

__all__ = [
    "CertError",
    "CertPair",
    "CertSelector",
    "generate_selfsigned",
    "load_pair",
    "read_file",
]

StrPath = str | os.PathLike[str]

# OpenSSL security level 2 (which l4lb.tls.context asks for) refuses RSA keys below 2048 bits;
# saying so here gives a clearer message than OpenSSL's "ee key too small".
MIN_RSA_BITS = 2048
# The curves TLS can sign with (RFC 8446 §4.2.3); OpenSSL loads others, then no client accepts them.
_TLS_CURVES = frozenset({"secp256r1", "secp384r1", "secp521r1"})
_EdKey = ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey
_KEY_BLOCK = re.compile(
    rb"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.+?-----END \1PRIVATE KEY-----", re.S
)


class CertError(L4lbError):
    """A certificate, key or OCSP file l4lb cannot use.

    `file` is the path as configured; `reason` says what is wrong with it. The message is
    `"{file}: {reason}"`, e.g. `"site.pem: certificate expired on 2025-01-01 00:00:00 UTC"`.
    """

    def __init__(self, file: StrPath, reason: str) -> None:
        self.file = os.fspath(file)
        self.reason = reason
        super().__init__(f"{self.file}: {reason}")


@dataclass(frozen=True, slots=True)
class CertPair:
    """A checked certificate chain and its key, as files on disk.

    `names` are the DNS names the leaf covers (subjectAltName, else the subject CN when there is
    no SAN), lowercased, wildcards kept as `*.example.com`. `not_after` is timezone-aware UTC.
    `chain_length` counts the certificates in the PEM file, leaf included. `subject` is the
    leaf's subject as RFC 4514 text, for logs and `l4lb check`.
    """

    cert_path: str
    key_path: str
    names: tuple[str, ...]
    not_after: dt.datetime
    chain_length: int
    subject: str = ""


# -- loading -------------------------------------------------------------------------------------


def load_pair(cert_path: StrPath, key_path: StrPath, *, now: dt.datetime | None = None) -> CertPair:
    """Read and check a PEM chain (leaf first, then intermediates) and its private key.

    `now` (aware datetime, default: the current time) is the instant the leaf must be valid at;
    tests pass a fixed one. Only the leaf's dates are checked: an expired intermediate can be
    deliberate (Let's Encrypt served an expired cross-sign to old Android clients in 2021).

    Raises `CertError` naming the file at fault: unreadable, not PEM, chain out of order (each
    certificate must be issued by the next one, as TLS 1.2 requires, RFC 5246 §7.4.2), leaf not
    yet valid or expired, key encrypted, unsupported or too weak, key not matching the leaf.
    `key_path` may be the same file as `cert_path` when the PEM holds both.
    """
    cert_path, key_path = os.fspath(cert_path), os.fspath(key_path)
    chain = _load_chain(cert_path)
    leaf = chain[0]
    _check_order(cert_path, chain)
    key = _load_key(key_path)
    if _spki(key.public_key()) != _spki(leaf.public_key()):
        raise CertError(key_path, f"private key does not match the certificate in {cert_path}")
    _check_dates(cert_path, leaf, now or dt.datetime.now(dt.UTC))
    return CertPair(
        cert_path=cert_path,
        key_path=key_path,
        names=_names(leaf),
        not_after=leaf.not_valid_after_utc,
        chain_length=len(chain),
        subject=leaf.subject.rfc4514_string(),
    )


def read_file(path: StrPath) -> bytes:
    """The bytes of `path`, or `CertError` saying why it cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise CertError(path, f"cannot read: {e.strerror or e}") from None


def _load_chain(path: str) -> list[x509.Certificate]:
    data = read_file(path)
    if b"-----BEGIN CERTIFICATE-----" not in data:
        try:
            x509.load_der_x509_certificate(data)
        except ValueError:
            raise CertError(path, "not a PEM certificate (no BEGIN CERTIFICATE block)") from None
        raise CertError(
            path,
            "not a PEM certificate: this is DER; convert it with "
            f"`openssl x509 -inform der -in {path} -out {path}.pem`",
        )
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise CertError(path, f"malformed PEM certificate: {e}") from None


def _load_key(path: str) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | _EdKey:
    data = read_file(path)
    block = _KEY_BLOCK.search(data)
    if block is None:
        raise CertError(path, "not a PEM private key (no BEGIN PRIVATE KEY block)")
    try:
        key = serialization.load_pem_private_key(block.group(0), password=None)
    except TypeError:
        raise CertError(
            path,
            "private key is encrypted; give l4lb an unencrypted key "
            f"(`openssl pkey -in {path} -out plain.key`) readable only by its user",
        ) from None
    except ValueError as e:
        raise CertError(path, f"malformed private key: {e}") from None
    return _check_key(path, key)


def _check_key(path: str, key: object) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | _EdKey:
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise CertError(
                path, f"RSA key is {key.key_size} bits; at least {MIN_RSA_BITS} are needed"
            )
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.name not in _TLS_CURVES:
            raise CertError(path, f"EC curve {key.curve.name} cannot sign in TLS; use P-256")
        return key
    if isinstance(key, _EdKey):
        return key
    raise CertError(
        path, f"unsupported key type {type(key).__name__}; use RSA, ECDSA P-256/384/521 or Ed25519"
    )


def _spki(public_key: object) -> bytes:
    return public_key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _check_order(path: str, chain: Sequence[x509.Certificate]) -> None:
    for n, (cert, issuer) in enumerate(itertools.pairwise(chain), start=1):
        if cert.issuer != issuer.subject:
            raise CertError(
                path,
                f"chain out of order: certificate {n + 1} ({issuer.subject.rfc4514_string()}) "
                f"did not issue certificate {n} ({cert.subject.rfc4514_string()}); "
                "list the leaf first, then each issuer in turn",
            )


def _check_dates(path: str, leaf: x509.Certificate, now: dt.datetime) -> None:
    if now.tzinfo is None:
        now = now.replace(tzinfo=dt.UTC)
    if now < leaf.not_valid_before_utc:
        raise CertError(path, f"certificate not valid before {_when(leaf.not_valid_before_utc)}")
    if now > leaf.not_valid_after_utc:
        raise CertError(path, f"certificate expired on {_when(leaf.not_valid_after_utc)}")


def _when(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _names(leaf: x509.Certificate) -> tuple[str, ...]:
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        raw = san.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        # RFC 6125 §6.4.4: the CN is only looked at when there is no subjectAltName at all.
        raw = [a.value for a in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return tuple(dict.fromkeys(_normalize(str(n)) for n in raw if n))


def _normalize(name: str) -> str:
    return name.strip().rstrip(".").lower()


# -- choosing by SNI -----------------------------------------------------------------------------


class CertSelector:
    """Picks the `CertPair` that answers an SNI name: exact name, then wildcard, then default.

    Built once per listener from its pairs; `select` is called from the TLS library's SNI
    callback on every handshake, so it does two dict lookups and nothing else. The first pair
    listing a name wins. `default` (the first pair if not given) answers clients that send no
    SNI or a name no pair covers, as nginx's `default_server` does.
    """

    __slots__ = ("_exact", "_wildcard", "default", "pairs")

    def __init__(self, pairs: Iterable[CertPair], default: CertPair | None = None) -> None:
        self.pairs = tuple(pairs)
        if not self.pairs:
            raise ValueError("CertSelector needs at least one certificate pair")
        self.default = default if default is not None else self.pairs[0]
        self._exact: dict[str, CertPair] = {}
        self._wildcard: dict[str, CertPair] = {}
        for pair in self.pairs:
            for name in pair.names:
                if name.startswith("*."):
                    self._wildcard.setdefault(name[2:], pair)
                elif "*" not in name:  # partial wildcards ("w*.example.com") match nothing
                    self._exact.setdefault(name, pair)

    def match(self, sni: str | None) -> CertPair | None:
        """The pair whose names cover `sni` (RFC 6125 §6.4.3), or None."""
        if not sni:
            return None
        name = _normalize(sni)
        pair = self._exact.get(name)
        if pair is not None:
            return pair
        label, dot, parent = name.partition(".")
        if label and dot and parent:
            return self._wildcard.get(parent)
        return None

    def select(self, sni: str | None) -> CertPair:
        """The pair to serve for `sni`: a covering one, else the default."""
        pair = self.match(sni)
        return pair if pair is not None else self.default


# -- self-signed ---------------------------------------------------------------------------------


def generate_selfsigned(
    cert_path: StrPath,
    key_path: StrPath,
    names: Sequence[str] = ("localhost",),
    ips: Sequence[str | ipaddress.IPv4Address | ipaddress.IPv6Address] = ("127.0.0.1", "::1"),
    days: int = 365,
) -> CertPair:
    """Write a new EC P-256 key (mode 0600) and a self-signed certificate covering names and IPs.

    The certificate is an end-entity one (CA:FALSE, serverAuth) with every name and IP in its
    subjectAltName, and its CN set to the first name; a client trusts it by loading the
    certificate itself as its CA file (`curl --cacert cert.pem`). Its validity starts five
    minutes in the past so that a client whose clock lags a little still accepts it.

    Raises ValueError for an IP that does not parse, `CertError` if a file cannot be written.
    Existing files are replaced.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cn = names[0] if names else str(ips[0]) if ips else "l4lb"
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    alt: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    alt += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    )
    cert = builder.sign(key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_private(key_path, key_pem)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return load_pair(cert_path, key_path)


def _write_private(path: StrPath, data: bytes) -> None:
    """Write `data` to `path` readable and writable by its owner only (0600), even if it existed."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(data)
    except OSError as e:
        raise CertError(path, f"cannot write: {e.strerror or e}") from None


def _write(path: StrPath, data: bytes) -> None:
    try:
        Path(path).write_bytes(data)
    except OSError as e:
        raise CertError(path, f"cannot write: {e.strerror or e}") from None
