"""Verification keys for the JWT stage: what each key may verify, read from a PEM file, a
JWKS document or a shared secret (sans-IO: bytes in, `KeySet` out).

The algorithms a key accepts come from its type, never from a token (RFC 8725 §3.1,
§2.1 "algorithm confusion"): an RSA key verifies RS* and PS*, an EC key the one ES* its
curve is for (P-256 ES256, P-384 ES384, P-521 ES512), an Ed25519/Ed448 key EdDSA, a secret
(`kty = "oct"`) the HS* whose hash is not longer than the secret (RFC 7518 §3.2). A JWK's
own `alg`, when it has one, narrows that to one algorithm, and the provider's `algorithms`
narrow it again. So an `HS256` token can never be checked with an RSA public key's bytes as
the HMAC secret, and `alg: none` is no key's algorithm. JWKS members that cannot verify
signatures (`use = "enc"`, unknown `kty` or curve) are skipped, as every JWKS client does.

Raises `KeyError_` (a message for the config error or the log) when nothing usable is left.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt import PyJWK
from jwt.exceptions import PyJWTError

__all__ = [
    "ALGORITHMS",
    "Key",
    "KeyError_",
    "KeySet",
    "keys_from_jwks",
    "keys_from_pem",
    "keys_from_secret",
]

#: Every algorithm a provider may name (RFC 7518 §3.1, RFC 8037 §3.1), by family.
HS = ("HS256", "HS384", "HS512")
RS = ("RS256", "RS384", "RS512")
PS = ("PS256", "PS384", "PS512")
ES = ("ES256", "ES384", "ES512")
ALGORITHMS = (*HS, *RS, *PS, *ES, "EdDSA")
_HS_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
_CURVES = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_PRIVATE = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
)
MIN_RSA_BITS = 2048  # NIST SP 800-131A; PyJWT warns below it


class KeyError_(ValueError):
    """No usable key: the message says why (for a located config error or a log line)."""


@dataclass(frozen=True, slots=True)
class Key:
    """One verification key: `key` is a cryptography public key, or bytes for HS*. `kid`
    None matches any token's `kid` (a PEM file or a secret has none)."""

    kid: str | None
    algorithms: frozenset[str]
    key: Any
    kind: str  # "RSA 2048", "EC P-256", "Ed25519", "secret 32 bytes": for messages


class KeySet:
    """Keys by `kid`, plus those without one. `select` gives the keys to try for a token."""

    __slots__ = ("algorithms", "by_kid", "keys", "unnamed")

    def __init__(self, keys: list[Key]) -> None:
        self.keys = tuple(keys)
        self.by_kid: dict[str, list[Key]] = {}
        for key in keys:
            if key.kid is not None:
                self.by_kid.setdefault(key.kid, []).append(key)
        self.unnamed = tuple(k for k in keys if k.kid is None)
        self.algorithms = frozenset().union(*(k.algorithms for k in keys))

    def select(self, kid: str | None, alg: str) -> list[Key]:
        """The keys that may verify a token with this `kid` (None: the token names none, so
        every key is tried, as Envoy does) and `alg`."""
        if kid is None:
            return [k for k in self.keys if alg in k.algorithms]
        found = self.by_kid.get(kid, ())
        return [k for k in (*found, *self.unnamed) if alg in k.algorithms]

    def knows(self, kid: str) -> bool:
        return kid in self.by_kid or bool(self.unnamed)

    def __len__(self) -> int:
        return len(self.keys)


def _public_key_algorithms(public: Any) -> tuple[frozenset[str], str]:
    if isinstance(public, rsa.RSAPublicKey):
        if public.key_size < MIN_RSA_BITS:
            raise KeyError_(f"an RSA key of {public.key_size} bits (at least {MIN_RSA_BITS})")
        return frozenset((*RS, *PS)), f"RSA {public.key_size}"
    if isinstance(public, ec.EllipticCurvePublicKey):
        alg = _CURVES.get(public.curve.name)
        if alg is None:
            raise KeyError_(f"an EC key on {public.curve.name} (P-256, P-384 or P-521)")
        return frozenset((alg,)), f"EC {public.curve.name}"
    if isinstance(public, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        name = "Ed25519" if isinstance(public, ed25519.Ed25519PublicKey) else "Ed448"
        return frozenset(("EdDSA",)), name
    raise KeyError_(f"a {type(public).__name__} (RSA, EC or Ed25519/Ed448 public keys)")


def _narrow(algorithms: frozenset[str], allowed: frozenset[str] | None) -> frozenset[str]:
    return algorithms if allowed is None else algorithms & allowed


def keys_from_pem(data: bytes, allowed: frozenset[str] | None = None) -> KeySet:
    """Public keys and certificates in a PEM file (each block one key, no `kid`). A private
    key is refused: the proxy only verifies, and a signing key has no business on it."""
    keys = []
    blocks = [b"-----BEGIN" + part for part in data.split(b"-----BEGIN")[1:]]
    if not blocks:
        raise KeyError_("no PEM block (-----BEGIN PUBLIC KEY----- or CERTIFICATE)")
    for block in blocks:
        if b"PRIVATE KEY" in block.split(b"\n", 1)[0]:
            raise KeyError_("a private key: give the public key or a certificate")
        try:
            if block.startswith(b"-----BEGIN CERTIFICATE"):
                public = x509.load_pem_x509_certificate(block).public_key()
            else:
                public = serialization.load_pem_public_key(block)
        except ValueError as exc:
            raise KeyError_(f"a PEM block that cannot be read: {exc}") from None
        algorithms, kind = _public_key_algorithms(public)
        keys.append(Key(None, _narrow(algorithms, allowed), public, kind))
    return _usable(keys, allowed)


def keys_from_secret(secret: bytes, allowed: frozenset[str] | None = None) -> KeySet:
    """A shared secret for HS*: each HS algorithm whose hash fits in it (RFC 7518 §3.2)."""
    if not secret:
        raise KeyError_("an empty secret")
    if secret.lstrip().startswith(b"-----BEGIN"):
        raise KeyError_("a PEM key given as a secret: use key_file for public keys")
    fits = frozenset(a for a in HS if len(secret) >= _HS_BYTES[a])
    if not fits:
        raise KeyError_(f"a secret of {len(secret)} bytes (HS256 needs at least 32)")
    key = Key(None, _narrow(fits, allowed), secret, f"secret {len(secret)} bytes")
    return _usable([key], allowed)


def keys_from_jwks(data: bytes | dict[str, Any], allowed: frozenset[str] | None = None) -> KeySet:
    """The signature keys of a JWKS document (RFC 7517 §5), as bytes or parsed."""
    if isinstance(data, bytes | str):
        try:
            data = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise KeyError_(f"not JSON: {exc}") from None
    members = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(members, list):
        raise KeyError_('not a JWK Set: expected {"keys": [...]}')
    keys = []
    for member in members:
        key = _jwk(member, allowed)
        if key is not None:
            keys.append(key)
    return _usable(keys, allowed)


def _jwk(member: Any, allowed: frozenset[str] | None) -> Key | None:
    if not isinstance(member, dict) or member.get("use", "sig") != "sig":
        return None
    kid = member.get("kid")
    if kid is not None and not isinstance(kid, str):
        return None
    try:
        key = PyJWK(member).key  # (its default algorithm is not used: see below)
    except (PyJWTError, ValueError, TypeError, KeyError, AttributeError):
        return None
    try:
        if member.get("kty") == "oct":
            if not isinstance(key, bytes) or not key:
                return None
            algorithms = frozenset(a for a in HS if len(key) >= _HS_BYTES[a])
            kind = f"secret {len(key)} bytes"
        else:
            if isinstance(key, _PRIVATE):
                key = key.public_key()  # a JWKS with private members: keep the public half
            algorithms, kind = _public_key_algorithms(key)
    except KeyError_:
        return None
    alg = member.get("alg")
    if alg is not None:
        if not isinstance(alg, str):
            return None  # (a JWKS URL answers what it likes: `"alg": []` was a TypeError)
        algorithms = algorithms & {alg}
    algorithms = _narrow(algorithms, allowed)
    return Key(kid, algorithms, key, kind) if algorithms else None


def _usable(keys: list[Key], allowed: frozenset[str] | None) -> KeySet:
    good = [k for k in keys if k.algorithms]
    if not good:
        if keys and allowed is not None:
            kinds = ", ".join(k.kind for k in keys)
            raise KeyError_(
                f"no key for algorithms {', '.join(sorted(allowed))} (the keys are: {kinds})"
            )
        raise KeyError_("no usable signature key")
    return KeySet(good)
