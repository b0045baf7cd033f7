"""The decisions of the JWT stage, sans-IO: find the token in a request, verify it against a
`KeySet` and a provider's rules at time `now`, and say what to answer when it fails.

The signature is checked by PyJWT (`PyJWS.decode_complete`, with the one algorithm the
chosen key allows); the registered claims are checked here, because PyJWT reads the clock
itself and the pipeline passes `now` in (STYLE.md). The rules are RFC 7519 §4.1 and RFC 8725:

- `exp`: refused when `now >= exp + leeway`; `nbf`: refused when `now < nbf - leeway`; both
  must be numbers when present (`require = ["exp"]` makes one mandatory).
- `iss`: one of `issuer` when set; `aud`: a string or list sharing a value with `audience`
  when set (Envoy's `audiences`: not checked when not configured).
- `alg` must be one the selected key allows (l7/jwtkeys.py): `none` never is.

Failures map to RFC 6750 §3.1: no credentials, 401 with a bare `WWW-Authenticate: Bearer`
challenge; a malformed request (two Authorization fields, an empty Bearer), 400
`invalid_request`; a bad, expired or unverifiable token, 401 `invalid_token`; a valid token
whose claims do not match the route's, 403 `insufficient_scope`. No keys yet (a JWKS URL not
fetched) is the proxy's problem, not the client's: 503.
"""

from __future__ import annotations

import base64
import json
import math
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from jwt.api_jws import PyJWS
from jwt.exceptions import PyJWTError

if TYPE_CHECKING:
    from l7.jwtconf import JwtConfig
    from l7.jwtkeys import KeySet
    from l7.model import Headers

__all__ = [
    "Failure",
    "challenge",
    "check_claims",
    "claim",
    "find_token",
    "forwarded_fields",
    "verify",
]

_JWS: Final = PyJWS()
_MAX_TOKEN: Final = 16384  # bytes; a longer Authorization value is not a token worth decoding
_SCOPE_CLAIMS: Final = ("scope", "scp")  # space-separated strings (RFC 8693 §4.2)


class Failure(NamedTuple):
    """Why a request is refused: `error` is an RFC 6750 code ("" for no credentials, or
    "unavailable" for 503), `unknown_kid` asks for a JWKS refetch."""

    status: int
    error: str
    description: str
    unknown_kid: bool = False


_MISSING: Final = Failure(401, "", "no bearer token")


def find_token(headers: Headers, cookie: str) -> str | Failure:
    """The token from `Authorization: Bearer` (RFC 6750 §2.1), else from the cookie named
    `cookie` (when set). Another Authorization scheme counts as no token."""
    found: bytes | None = None
    for name, value in headers:
        if name == b"authorization":
            if found is not None:
                return Failure(400, "invalid_request", "more than one Authorization field")
            found = value
    if found is not None:
        if found.startswith(b"Bearer "):  # the usual spelling: what the general case gives
            scheme, rest = b"bearer", found[7:]
        else:
            scheme, _, rest = found.strip().partition(b" ")
        if scheme.lower() == b"bearer":
            token = rest.strip()
            if not token:
                return Failure(400, "invalid_request", "an empty bearer token")
            return _text(token)
    if cookie:
        wanted = cookie.encode("latin-1")
        for name, value in headers:
            if name == b"cookie":
                for pair in value.split(b";"):
                    key, eq, got = pair.strip().partition(b"=")
                    if eq and key == wanted and got:
                        return _text(got.strip(b'"'))
    return _MISSING


def _text(token: bytes) -> str | Failure:
    if len(token) > _MAX_TOKEN:
        return Failure(401, "invalid_token", "the token is too long")
    try:
        return token.decode("ascii")
    except UnicodeDecodeError:
        return Failure(401, "invalid_token", "the token is not ASCII")


def verify(token: str, config: JwtConfig, keys: KeySet | None, now: float) -> dict | Failure:
    """The token's claims, checked; or why not."""
    header = _header(token)
    if header is None:
        return Failure(401, "invalid_token", "the token is malformed")
    alg, kid = header.get("alg"), header.get("kid")
    if kid is not None and not isinstance(kid, str):
        return Failure(401, "invalid_token", "the token's kid is not a string")
    if not isinstance(alg, str) or alg == "none" or alg.lower() == "none":
        return Failure(401, "invalid_token", "unsigned tokens (alg none) are refused")
    if keys is None:
        return Failure(503, "unavailable", "the signing keys are not available yet")
    accepted = config.algorithms
    if alg not in keys.algorithms or (accepted and alg not in accepted):
        return Failure(401, "invalid_token", f"algorithm {alg} is not accepted")
    candidates = keys.select(kid, alg)
    if not candidates:
        unknown = kid is not None and not keys.knows(kid)
        why = "unknown key id" if unknown else f"no key for algorithm {alg}"
        return Failure(401, "invalid_token", why, unknown_kid=unknown)
    payload = None
    for key in candidates:
        try:
            payload = _JWS.decode_complete(token, key.key, algorithms=[alg])["payload"]
            break
        except (PyJWTError, TypeError, ValueError):  # (a wrong key type: never a traceback)
            continue
    if payload is None:
        return Failure(401, "invalid_token", "the signature does not verify")
    try:
        claims = json.loads(payload)
    except (ValueError, RecursionError):
        return Failure(401, "invalid_token", "the claims are not JSON")
    if not isinstance(claims, dict):
        return Failure(401, "invalid_token", "the claims are not a JSON object")
    failure = check_claims(claims, config, now)
    return claims if failure is None else failure


def _header(token: str) -> dict[str, Any] | None:
    """The JOSE header, read only to choose the key: PyJWT checks the whole token strictly
    when it verifies, and refuses it if its `alg` is not the one the key was chosen for (its
    own `get_unverified_header` would decode and check every segment twice)."""
    head, dot, _ = token.partition(".")
    if not dot or len(head) > 2048:
        return None
    try:
        header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, RecursionError):
        return None
    return header if isinstance(header, dict) else None


def _number(value: Any) -> bool:
    """A JSON number (RFC 7519 NumericDate), not a boolean, and finite: Python's json reads
    `NaN` and `Infinity`, and `now >= NaN` is never true."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return isinstance(value, int) or math.isfinite(value)


def check_claims(claims: dict[str, Any], config: JwtConfig, now: float) -> Failure | None:
    """The registered claims (module docstring), `require`, then the route's claim matches."""
    leeway = config.leeway
    for name in config.require:
        if claim(claims, name) is None:
            return Failure(401, "invalid_token", f"the token has no {name} claim")
    exp = claims.get("exp")
    if exp is not None:
        if not _number(exp):
            return Failure(401, "invalid_token", "exp is not a number")
        if now >= exp + leeway:
            return Failure(401, "invalid_token", "the token has expired")
    nbf = claims.get("nbf")
    if nbf is not None:
        if not _number(nbf):
            return Failure(401, "invalid_token", "nbf is not a number")
        if now < nbf - leeway:
            return Failure(401, "invalid_token", "the token is not valid yet")
    if config.issuers and claims.get("iss") not in config.issuers:
        return Failure(401, "invalid_token", "the issuer is not accepted")
    if config.audiences:
        aud = claims.get("aud")
        given = aud if isinstance(aud, list) else [aud]
        if not any(isinstance(a, str) and a in config.audiences for a in given):
            return Failure(401, "invalid_token", "the audience is not accepted")
    for name, allowed in config.claims:
        if not _matches(name, claim(claims, name), allowed):
            return Failure(403, "insufficient_scope", f"claim {name} does not match")
    return None


def claim(claims: dict[str, Any], name: str) -> Any:
    """A claim by name; a dotted name walks into objects (`realm_access.roles`, as Envoy's
    `claim_to_headers`) unless a claim has that very name."""
    value = claims.get(name)
    if value is not None or "." not in name:
        return value
    node: Any = claims
    for part in name.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b  # (True is not 1, "1" is not 1)


def _matches(name: str, value: Any, allowed: tuple[Any, ...]) -> bool:
    """One of `allowed` equals the claim, or an element of it when it is a list (or a
    space-separated `scope`)."""
    if value is None:
        return False
    if isinstance(value, str) and name.rsplit(".", 1)[-1] in _SCOPE_CLAIMS:
        value = value.split()
    items = value if isinstance(value, list) else [value]
    return any(_same(item, want) for item in items for want in allowed)


def _field(value: Any) -> bytes | None:
    """A claim as a header value: strings as they are, numbers and booleans as JSON, lists
    joined with commas, objects as JSON; None if it would not be a safe field value."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        text = ",".join(value)
    else:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=True)
    try:
        data = text.encode("latin-1")
    except UnicodeEncodeError:
        data = json.dumps(text, ensure_ascii=True)[1:-1].encode("ascii")
    if any((c < 0x20 and c != 0x09) or c == 0x7F for c in data):
        return None  # no CR/LF (header injection) or other control characters
    return data


def forwarded_fields(
    claims: dict[str, Any], forward: tuple[tuple[str, bytes], ...]
) -> list[tuple[bytes, bytes]]:
    """The `forward` claims (claim, header name) present in the token, as header fields."""
    out = []
    for name, header in forward:
        value = claim(claims, name)
        if value is not None:
            data = _field(value)
            if data is not None:
                out.append((header, data))
    return out


def challenge(realm: str, failure: Failure) -> bytes:
    """The `WWW-Authenticate` value for `failure` (RFC 6750 §3)."""
    text = f'Bearer realm="{realm}"'
    if failure.error and failure.error != "unavailable":
        text += f', error="{failure.error}", error_description="{failure.description}"'
    return text.encode("ascii")
