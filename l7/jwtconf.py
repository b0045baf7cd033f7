"""Config of the JWT stage: `[jwt.NAME]` providers, and a route's `jwt = "NAME"` (or an inline
`jwt = {...}` table with the same keys), docs/CONFIG.md "JWT".

The shape is Envoy's `jwt_authn` (named providers with issuer, audiences, keys, where the
token is, which claims become headers, referenced by routes) in nginx-plus words where those
are plainer (`leeway` is `auth_jwt_leeway`, `claims` is `auth_jwt_require`). Key files are
read here, at load, so a missing file or a key that fits none of `algorithms` is a located
config error, and a reload re-reads them; a `jwks_url` is fetched at run time
(l7/jwtfetch.py). Every problem goes through the loader's `error`, with its key path.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from l4lb.config.tables import NAME as _NAME
from l4lb.config.tables import Fields, Path_, TableLoader
from l4lb.config.tables import strings as _strings
from l4lb.config.values import BadValue, boolean, duration, string
from l7.jwtkeys import ALGORITHMS, KeyError_, keys_from_jwks, keys_from_pem, keys_from_secret

if TYPE_CHECKING:
    from l7.jwtkeys import KeySet

__all__ = ["JwtConfig", "check_route", "parse_providers", "parse_route_jwt"]

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 §5.6.2
_KEY_SOURCES = ("key_file", "jwks_file", "jwks_url", "secret", "secret_file")
# Fields a claim may not be written into: framing, hop-by-hop, routing and the token itself.
_RESERVED = frozenset(
    {
        "authorization",
        "connection",
        "content-length",
        "cookie",
        "host",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


@dataclass(frozen=True, slots=True)
class JwtConfig:
    """One provider. `keys` is the key set read at load (None for `jwks_url`; left out of
    comparisons and `/config`, as a file's contents are); `forward` is (claim, lower-case
    header name) pairs; `claims` is (claim, accepted values) pairs. Only JSON-able values
    besides `keys`, for `/config` and `l4lb plan`."""

    name: str
    realm: str
    keys: KeySet | None = field(default=None, compare=False)
    jwks_url: str = ""
    algorithms: tuple[str, ...] = ()  # empty: what the keys' types allow
    issuers: tuple[str, ...] = ()
    audiences: tuple[str, ...] = ()
    cookie: str = ""
    leeway: float = 0.0
    require: tuple[str, ...] = ()
    claims: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    forward: tuple[tuple[str, str], ...] = ()
    forward_token: bool = True
    jwks_refresh: float = 300.0
    jwks_timeout: float = 5.0
    jwks_min_refetch: float = 10.0


def _algorithms(value: Any) -> tuple[str, ...]:
    allowed = ", ".join(ALGORITHMS)
    out = set()
    for item in _strings(value):
        if item.lower() == "none":
            raise BadValue("'none' is refused: unsigned tokens are never accepted", allowed)
        if item not in ALGORITHMS:
            close = difflib.get_close_matches(item.upper(), ALGORITHMS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise BadValue(f"unknown algorithm {item!r}{hint}", allowed)
        out.add(item)
    return tuple(a for a in ALGORITHMS if a in out)


def _url(value: Any) -> str:
    text = string(value)
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadValue(f"{text!r} is not an http(s) URL", '"https://idp.example.com/jwks.json"')
    return text


def _cookie(value: Any) -> str:
    text = string(value)
    if not _TOKEN.match(text):
        raise BadValue(f"{text!r} is not a cookie name", "letters, digits and !#$%&'*+.^_`|~-")
    return text


def _realm(value: Any) -> str:
    text = string(value)
    if not all(c.isascii() and c.isprintable() and c not in '"\\' for c in text):
        raise BadValue(f"{text!r} cannot go in a quoted string", "printable ASCII, no quotes")
    return text


def _names(value: Any) -> tuple[str, ...]:
    return _strings(value) if value != [] else ()


_PROVIDER: Fields = {
    "issuer": (_names, ()),
    "audience": (_names, ()),
    "algorithms": (_algorithms, ()),
    "key_file": (string, ""),
    "jwks_file": (string, ""),
    "jwks_url": (_url, ""),
    "secret": (string, ""),
    "secret_file": (string, ""),
    "cookie": (_cookie, ""),
    "leeway": (lambda v: duration(v, allow_zero=True), 0.0),
    "require": (_names, ()),
    "claims": (lambda v: v, None),
    "forward": (lambda v: v, None),
    "forward_token": (boolean, True),
    "realm": (_realm, ""),
    "jwks_refresh": (duration, 300.0),
    "jwks_timeout": (duration, 5.0),
    "jwks_min_refetch": (duration, 10.0),
}


def parse_providers(loader: TableLoader, value: Any) -> dict[str, JwtConfig | None]:
    """The `[jwt.NAME]` tables; a name maps to None when its table had errors (reported), so
    routes naming it are not reported again as naming an unknown provider."""
    return {
        name: parse_provider(loader, name, body, ["jwt", name])
        for name, body in loader.named_tables(value, ["jwt"]).items()
    }


def parse_provider(loader: TableLoader, name: str, value: Any, parts: Path_) -> JwtConfig | None:
    raw = loader.table(value, parts, _PROVIDER)
    if raw is None:
        return None
    given = [k for k in _KEY_SOURCES if raw[k]]
    if len(given) != 1:
        loader.error(
            [*parts, given[1]] if given else parts,
            "a provider needs exactly one key source"
            + (f", not {' and '.join(given)}" if given else ""),
            ", ".join(_KEY_SOURCES),
        )
        return None
    source = given[0]
    keys = None if source == "jwks_url" else _read_keys(loader, raw, source, [*parts, source])
    claims = _claim_matches(loader, raw["claims"], [*parts, "claims"])
    forward = _forward(loader, raw["forward"], [*parts, "forward"])
    if (keys is None and source != "jwks_url") or claims is None or forward is None:
        return None
    return JwtConfig(
        name=name,
        realm=raw["realm"] or name,
        keys=keys,
        jwks_url=raw["jwks_url"],
        algorithms=raw["algorithms"],
        issuers=raw["issuer"],
        audiences=raw["audience"],
        cookie=raw["cookie"],
        leeway=raw["leeway"],
        require=raw["require"],
        claims=claims,
        forward=forward,
        forward_token=raw["forward_token"],
        jwks_refresh=raw["jwks_refresh"],
        jwks_timeout=raw["jwks_timeout"],
        jwks_min_refetch=raw["jwks_min_refetch"],
    )


def _read_keys(
    loader: TableLoader, raw: dict[str, Any], source: str, where: Path_
) -> KeySet | None:
    allowed = frozenset(raw["algorithms"]) if raw["algorithms"] else None
    if source == "secret":
        data = raw["secret"].encode()
        shown = "the secret"
    else:
        path = loader.path(raw[source])
        shown = str(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            loader.error(where, f"cannot read {path}: {exc.strerror or exc}", "a readable file")
            return None
        if source == "secret_file":
            data = data.rstrip(b"\r\n")
    try:
        if source == "key_file":
            return keys_from_pem(data, allowed)
        if source == "jwks_file":
            return keys_from_jwks(data, allowed)
        return keys_from_secret(data, allowed)
    except KeyError_ as exc:
        hint = {
            "key_file": "a PEM public key or certificate (RSA 2048+, EC P-256/384/521, Ed25519)",
            "jwks_file": 'a JWK Set: {"keys": [{"kty": ..., "kid": ..., ...}]}',
        }.get(source, "a secret of at least 32 bytes, for HS256/384/512")
        loader.error(where, f"{shown}: {exc}", hint)
        return None


def _claim_matches(loader: TableLoader, value: Any, parts: Path_) -> tuple | None:
    """`claims = {role = "admin", groups = ["ops", "dev"]}`: equals, or one of."""
    if value is None:
        return ()
    example = '{role = "admin", groups = ["ops", "dev"]}'
    if not isinstance(value, dict):
        loader.error(parts, f"expected a table, got {value!r}", example)
        return None
    out = []
    for name, want in value.items():
        items = want if isinstance(want, list) else [want]
        if not items or not all(isinstance(v, str | int | bool) for v in items):
            loader.error(
                [*parts, name], f"expected a value or a list of values, got {want!r}", example
            )
            return None
        out.append((name, tuple(items)))
    return tuple(out)


def _forward(loader: TableLoader, value: Any, parts: Path_) -> tuple | None:
    """`forward = {sub = "X-User", email = "X-Email"}`: claim = header name."""
    if value is None:
        return ()
    example = '{sub = "X-User", email = "X-Email"}'
    if not isinstance(value, dict):
        loader.error(parts, f"expected a table, got {value!r}", example)
        return None
    out = []
    seen: set[str] = set()
    for name, header in value.items():
        where = [*parts, name]
        if not isinstance(header, str) or not _TOKEN.match(header):
            loader.error(where, f"{header!r} is not a header name", example)
            return None
        lower = header.lower()
        if lower in _RESERVED or lower.startswith(":"):
            loader.error(where, f"{header!r} cannot carry a claim", "a header of your own")
            return None
        if lower in seen:
            loader.error(where, f"{header!r} is already given a claim", "one claim per header")
            return None
        seen.add(lower)
        out.append((name, lower))
    return tuple(out)


def parse_route_jwt(
    loader: TableLoader, item: dict[str, Any], here: Path_, index: int
) -> JwtConfig | None:
    """A route's `jwt`: a provider's name, or an inline provider table (named after the
    route). None when there is none, or on a reported error."""
    value = item.get("jwt")
    if value is None:
        return None
    where = [*here, "jwt"]
    if isinstance(value, dict):
        name = item.get("name") if isinstance(item.get("name"), str) else f"route[{index}]"
        return parse_provider(loader, name, value, where)
    providers: dict[str, JwtConfig | None] = getattr(loader, "jwt_providers", {})
    if not isinstance(value, str) or not _NAME.match(value):
        loader.error(where, f"expected a provider name or a table, got {value!r}", '"NAME"')
        return None
    if value not in providers:
        close = difflib.get_close_matches(value, list(providers), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        loader.error(
            where,
            f"no jwt provider named {value!r}{hint}",
            ", ".join(providers) or "declare one with [jwt.NAME]",
        )
        return None
    return providers[value]


def check_route(loader: TableLoader, security: Any, item: dict[str, Any], here: Path_) -> None:
    """What a route's other keys need from its `jwt`: a rate limit keyed by `claim:NAME`
    needs one; a `cache` cannot have one, since the shared cache would hand one user's
    answer to another (RFC 9111 §3.5 is about Authorization, and the token may be in a
    cookie or removed before the store decides)."""
    if item.get("jwt") is not None:
        if item.get("cache"):
            loader.error(
                [*here, "cache"],
                "a route with jwt cannot use a shared cache: it would answer one user with "
                "another's response",
                "cache on routes without jwt",
            )
        return
    for i, limit in enumerate(security.rate_limits if security is not None else ()):
        if limit.key.startswith("claim:"):
            loader.error(
                [*here, "rate_limits", i, "key"],
                f"{limit.key!r} needs the route to validate a JWT",
                'jwt = "NAME" on the route, or key = "client"',
            )
