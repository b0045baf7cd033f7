"""The JWT stage's sans-IO parts: keys and what they may verify, token lookup, verification
at a given `now`, claim matches, forwarded fields, the JWKS schedule, and config errors."""

from __future__ import annotations

import json
import math
import textwrap
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import example, given
from hypothesis import strategies as st

from l4lb.config import load_text
from l4lb.errors import ConfigErrors
from l7.jwtconf import JwtConfig
from l7.jwtfetch import JwksSchedule
from l7.jwtkeys import KeyError_, keys_from_jwks, keys_from_pem, keys_from_secret
from l7.jwtstage import JwtStage
from l7.jwtverify import Failure, challenge, find_token, forwarded_fields, verify
from l7.model import Request

NOW = 1_800_000_000.0
SECRET = b"s" * 32


def _pem(private) -> bytes:
    return private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _config(keys, **kw) -> JwtConfig:
    return JwtConfig(name="p", realm="p", keys=keys, **kw)


def _claims(**kw):
    return {"sub": "alice", "exp": NOW + 60, **kw}


def test_algorithms_come_from_the_key_type(rsa_key):
    assert keys_from_pem(_pem(rsa_key)).algorithms == {
        "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"
    }  # fmt: skip
    for curve, alg in ((ec.SECP256R1(), "ES256"), (ec.SECP384R1(), "ES384"),
                       (ec.SECP521R1(), "ES512")):  # fmt: skip
        assert keys_from_pem(_pem(ec.generate_private_key(curve))).algorithms == {alg}
    assert keys_from_pem(_pem(ed25519.Ed25519PrivateKey.generate())).algorithms == {"EdDSA"}
    assert keys_from_secret(b"x" * 32).algorithms == {"HS256"}
    assert keys_from_secret(b"x" * 64).algorithms == {"HS256", "HS384", "HS512"}


def test_unusable_keys_are_refused(rsa_key):
    with pytest.raises(KeyError_, match="at least 32"):
        keys_from_secret(b"short")
    with pytest.raises(KeyError_, match="private key"):
        keys_from_pem(
            rsa_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    with pytest.raises(KeyError_, match="no key for algorithms HS256"):
        keys_from_pem(_pem(rsa_key), frozenset({"HS256"}))
    with pytest.raises(KeyError_, match="a secret"):
        keys_from_secret(_pem(rsa_key))
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(KeyError_, match="1024 bits"):
        keys_from_pem(_pem(small))


def test_jwks_members_kid_and_alg(rsa_key):
    member = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
    doc = {
        "keys": [
            {**member, "kid": "a", "alg": "RS256"},
            {**member, "kid": "enc", "use": "enc"},  # skipped: not a signature key
            {"kty": "weird", "kid": "w"},  # skipped
        ]
    }
    keys = keys_from_jwks(json.dumps(doc).encode())
    assert len(keys) == 1 and keys.algorithms == {"RS256"}  # the JWK's alg narrows
    assert keys.select("a", "RS256") and not keys.select("b", "RS256")
    assert not keys.knows("b")
    with pytest.raises(KeyError_, match="JWK Set"):
        keys_from_jwks(b"[]")


@pytest.mark.parametrize(
    "kind", ["HS256", "HS512", "RS256", "RS512", "PS256", "ES256", "ES384", "ES512", "EdDSA"]
)
def test_each_family_verifies(kind, rsa_key):
    if kind.startswith("HS"):
        signing, keys = b"k" * 64, keys_from_secret(b"k" * 64)
    elif kind[:2] in ("RS", "PS"):
        signing, keys = rsa_key, keys_from_pem(_pem(rsa_key))
    elif kind == "EdDSA":
        signing = ed25519.Ed25519PrivateKey.generate()
        keys = keys_from_pem(_pem(signing))
    else:
        curve = {"ES256": ec.SECP256R1(), "ES384": ec.SECP384R1(), "ES512": ec.SECP521R1()}
        signing = ec.generate_private_key(curve[kind])
        keys = keys_from_pem(_pem(signing))
    token = jwt.encode(_claims(), signing, algorithm=kind)
    assert verify(token, _config(keys), keys, NOW)["sub"] == "alice"
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert verify(tampered, _config(keys), keys, NOW).error == "invalid_token"


def test_alg_none_and_key_confusion_are_refused(rsa_key):
    keys = keys_from_pem(_pem(rsa_key))
    unsigned = jwt.encode(_claims(), None, algorithm="none")
    failure = verify(unsigned, _config(keys), keys, NOW)
    assert failure.status == 401 and "alg none" in failure.description
    # An HS256 token whose HMAC secret is the RSA public key's PEM bytes: the classic confusion.
    header = jwt.utils.base64url_encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = jwt.utils.base64url_encode(json.dumps(_claims()).encode())
    import hashlib
    import hmac

    signing_input = header + b"." + payload
    mac = hmac.new(_pem(rsa_key), signing_input, hashlib.sha256).digest()
    forged = (signing_input + b"." + jwt.utils.base64url_encode(mac)).decode()
    failure = verify(forged, _config(keys), keys, NOW)
    assert failure.status == 401 and "HS256 is not accepted" in failure.description
    # The provider's `algorithms` narrow what a key allows.
    token = jwt.encode(_claims(), rsa_key, algorithm="PS256")
    narrowed = _config(keys, algorithms=("RS256",))
    assert verify(token, narrowed, keys, NOW).description == "algorithm PS256 is not accepted"


def test_time_claims_with_leeway():
    keys = keys_from_secret(SECRET)
    config = _config(keys, leeway=30.0)
    expired = jwt.encode({"exp": NOW - 10}, SECRET, algorithm="HS256")
    assert isinstance(verify(expired, config, keys, NOW), dict)  # within the leeway
    assert verify(expired, config, keys, NOW + 25).description == "the token has expired"
    early = jwt.encode({"nbf": NOW + 20}, SECRET, algorithm="HS256")
    assert isinstance(verify(early, config, keys, NOW), dict)
    assert verify(early, _config(keys), keys, NOW).description == "the token is not valid yet"
    bad = jwt.encode({"exp": "tomorrow"}, SECRET, algorithm="HS256")
    assert verify(bad, config, keys, NOW).description == "exp is not a number"
    never = jwt.encode({"exp": float("nan"), "nbf": True}, SECRET, algorithm="HS256")
    assert verify(never, config, keys, NOW).description == "exp is not a number"


def test_issuer_audience_require_and_claim_matches():
    keys = keys_from_secret(SECRET)
    config = _config(
        keys,
        issuers=("https://idp",),
        audiences=("api",),
        require=("sub",),
        claims=(("role", ("admin", "ops")), ("scope", ("write",)), ("org.id", (7,))),
    )
    good = {
        "iss": "https://idp", "aud": ["web", "api"], "sub": "a", "role": "ops",
        "scope": "read write", "org": {"id": 7},
    }  # fmt: skip

    def run(**change):
        token = jwt.encode({**good, **change}, SECRET, algorithm="HS256")
        return verify(token, config, keys, NOW)

    assert run()["sub"] == "a"
    assert run(iss="https://evil").description == "the issuer is not accepted"
    assert run(aud="web").description == "the audience is not accepted"
    assert run(sub=None).description == "the token has no sub claim"
    denied = run(role="guest")
    assert (denied.status, denied.error) == (403, "insufficient_scope")
    assert run(scope="read").status == 403
    assert run(org={"id": "7"}).status == 403  # "7" is not 7


def test_unknown_kid_asks_for_a_refetch(rsa_key):
    member = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
    keys = keys_from_jwks({"keys": [{**member, "kid": "old"}]})
    token = jwt.encode(_claims(), rsa_key, algorithm="RS256", headers={"kid": "new"})
    failure = verify(token, _config(None), keys, NOW)
    assert failure.unknown_kid and failure.description == "unknown key id"
    assert verify(token, _config(None), None, NOW).status == 503  # no keys fetched yet


def test_find_token():
    assert find_token([(b"authorization", b"Bearer abc")], "") == "abc"
    assert find_token([(b"authorization", b"bearer  abc ")], "") == "abc"
    assert find_token([(b"authorization", b"Basic abc")], "") == Failure(401, "", "no bearer token")
    assert find_token([], "").error == ""
    two = [(b"authorization", b"Bearer a"), (b"authorization", b"Bearer b")]
    assert find_token(two, "").error == "invalid_request"
    assert find_token([(b"authorization", b"Bearer ")], "").status == 400
    cookies = [(b"cookie", b"a=1; session=tok; b=2")]
    assert find_token(cookies, "session") == "tok"
    assert find_token(cookies, "").status == 401
    header_first = [(b"authorization", b"Bearer h"), *cookies]
    assert find_token(header_first, "session") == "h"


def test_forwarded_fields_and_challenge():
    forward = (("sub", b"x-user"), ("groups", b"x-groups"), ("n", b"x-n"), ("x", b"x-x"))
    fields = forwarded_fields({"sub": "alice", "groups": ["a", "b"], "n": 3}, forward)
    assert fields == [(b"x-user", b"alice"), (b"x-groups", b"a,b"), (b"x-n", b"3")]
    assert forwarded_fields({"sub": "a\r\nx-admin: 1"}, forward) == []  # no header injection
    assert challenge("api", Failure(401, "", "")) == b'Bearer realm="api"'
    assert challenge("api", Failure(401, "invalid_token", "the token has expired")) == (
        b'Bearer realm="api", error="invalid_token", error_description="the token has expired"'
    )


def test_jwks_schedule():
    s = JwksSchedule(refresh=300.0, min_refetch=10.0)
    assert s.due(0.0)
    s.started(0.0)
    assert not s.due(1.0) and not s.may_refetch(100.0)  # one fetch at a time
    s.done(1.0, ok=True)
    assert s.next_deadline() == 301.0 and not s.due(300.0) and s.due(301.0)
    assert not s.may_refetch(5.0) and s.may_refetch(10.0)  # unknown kid: at most every 10 s
    s.started(10.0)
    s.done(11.0, ok=False)
    assert s.next_deadline() == 21.0  # a failure is retried after min_refetch


BASE = """\
[listener.web]
bind = "127.0.0.1:8080"
protocol = "http"
[[listener.web.routes]]
name = "api"
pool = "api"
{route}
[pool.api]
[[pool.api.servers]]
address = "127.0.0.1:9001"
{tail}
"""


def _load(route: str, tail: str = "", tmp=None):
    text = BASE.format(route=textwrap.dedent(route), tail=textwrap.dedent(tail))
    file = str(tmp / "site.toml") if tmp is not None else "site.toml"
    return load_text(text, file).listeners[0].routes[0]


def _errors(route: str, tail: str = "", tmp=None) -> str:
    with pytest.raises(ConfigErrors) as info:
        _load(route, tail, tmp)
    return "\n".join(str(e) for e in info.value.errors)


def test_config_named_and_inline(tmp_path, rsa_key):
    (tmp_path / "idp.pem").write_bytes(_pem(rsa_key))
    tail = """
    [jwt.idp]
    key_file = "idp.pem"
    issuer = "https://idp"
    audience = ["api", "web"]
    leeway = "30s"
    forward = {sub = "X-User"}
    claims = {role = ["admin", "ops"]}
    """
    route = _load('jwt = "idp"\nrate_limits = [{rate = 5, key = "claim:sub"}]', tail, tmp_path)
    assert route.jwt.name == "idp" and route.jwt.keys.algorithms >= {"RS256"}
    assert route.jwt.audiences == ("api", "web") and route.jwt.leeway == 30.0
    assert route.jwt.forward == (("sub", "x-user"),)
    assert route.security.rate_limits[0].key == "claim:sub"
    inline = _load('jwt = {secret = "' + "x" * 32 + '", cookie = "session"}')
    assert inline.jwt.name == "api" and inline.jwt.cookie == "session"


def test_config_errors_are_located(tmp_path):
    out = _errors('jwt = {key_file = "missing.pem"}', tmp=tmp_path)
    assert "site.toml:7: listener.web.routes[0].jwt.key_file" in out
    assert "missing.pem: No such file" in out
    out = _errors('jwt = {secret = "' + "x" * 32 + '", algorithms = ["HS257"]}')
    assert "jwt.algorithms: unknown algorithm 'HS257'; did you mean 'HS256'?" in out
    assert "RS256" in out  # what is allowed
    assert "'none' is refused" in _errors('jwt = {secret = "x", algorithms = ["none"]}')
    out = _errors('jwt = {secret = "short"}')
    assert "jwt.secret: the secret: a secret of 5 bytes" in out
    assert "exactly one key source" in _errors("jwt = {}")
    out = _errors('jwt = "idpp"', '[jwt.idp]\nsecret = "' + "x" * 32 + '"\n')
    assert "no jwt provider named 'idpp'; did you mean 'idp'?" in out
    out = _errors('rate_limits = [{rate = 5, key = "claim:sub"}]')
    assert "rate_limits[0].key: 'claim:sub' needs the route to validate a JWT" in out
    out = _errors('jwt = {secret = "' + "x" * 32 + '", forward = {sub = "Authorization"}}')
    assert "cannot carry a claim" in out
    (tmp_path / "k.pem").write_bytes(b"not a key")
    assert "no PEM block" in _errors('jwt = {key_file = "k.pem"}', tmp=tmp_path)
    out = _errors(
        'cache = "c"\njwt = {secret = "' + "x" * 32 + '"}', '[cache.c]\nmax_bytes = "1m"\n'
    )
    assert "routes[0].cache: a route with jwt cannot use a shared cache" in out
    out = _errors('jwt = {jwks_url = "ftp://x/jwks"}')
    assert "is not an http(s) URL" in out


class _Exchange:
    """What the stage uses of an exchange: the request, and where an answer goes."""

    def __init__(self, token: str, *extra: tuple[bytes, bytes]) -> None:
        self.request = Request("GET", "/", [(b"authorization", f"Bearer {token}".encode()), *extra])
        self.request_id = "r1"
        self.claims = None
        self.answer: tuple | None = None
        self.finished = False
        self.starts = 0
        self.engine = type("E", (), {"extra_response_headers": []})()

    def simple(self, status: int, headers: list, body: bytes) -> None:
        self.answer = (status, dict(headers), body)
        self.finished = True

    def start(self) -> None:
        self.starts += 1


class _Source:
    """A JWKS URL's source: `wait` holds a request when `fetching`."""

    def __init__(self, keys) -> None:
        self.keys = keys
        self.fetching = False
        self.waiting: list = []

    def wait(self, resume) -> bool:
        if self.fetching:
            self.waiting.append(resume)
        return self.fetching


def test_stage_caches_verified_tokens_per_key_set(rsa_key):
    member = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
    source = _Source(keys_from_jwks({"keys": [{**member, "kid": "a"}]}))
    config = JwtConfig(name="p", realm="p", jwks_url="http://x", forward=(("sub", "x-user"),))
    stage = JwtStage("r", config, source)  # type: ignore[arg-type]
    token = jwt.encode(
        {"sub": "alice", "exp": time.time() + 600}, rsa_key, algorithm="RS256", headers={"kid": "a"}
    )
    ex = _Exchange(token, (b"x-user", b"mallory"))
    assert stage.check(ex) and ex.claims["sub"] == "alice"
    assert ex.request.headers[-1] == (b"x-user", b"alice") and len(ex.request.headers) == 2
    assert token in stage.cache
    again = _Exchange(token)
    assert stage.check(again) and again.request.header(b"x-user") == b"alice"  # from the cache
    # The key is rotated out: the cached verdict belonged to the old set, so it is redone.
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    member = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(other.public_key()))
    source.keys = keys_from_jwks({"keys": [{**member, "kid": "b"}]})
    gone = _Exchange(token)
    assert not stage.check(gone) and gone.answer[0] == 401  # (no fetch to wait for)
    assert b"unknown key id" in gone.answer[1][b"www-authenticate"]
    # A cached token's time claims are checked on every use.
    keys = source.keys
    claims = {"sub": "alice", "exp": time.time() - 5}
    stage.cache[token] = (keys, claims, [], -math.inf, claims["exp"])
    expired = _Exchange(token)
    assert not stage.check(expired) and b"expired" in expired.answer[1][b"www-authenticate"]
    assert token not in stage.cache
    claims = {"sub": "alice", "nbf": time.time() + 60}
    stage.cache[token] = (keys, claims, [], claims["nbf"], math.inf)
    early = _Exchange(token)
    assert not stage.check(early) and b"not valid yet" in early.answer[1][b"www-authenticate"]
    assert token not in stage.cache


def test_cached_tokens_keep_their_validity_window(rsa_key):
    """The cache keeps when a token is valid (nbf and exp, leeway applied): a hit compares
    the time with those, and a token that has expired since is refused and forgotten."""
    config = JwtConfig(name="p", realm="p", keys=keys_from_pem(_pem(rsa_key)), leeway=30.0)
    stage = JwtStage("r", config, None)
    now = time.time()
    token = jwt.encode({"sub": "a", "nbf": now - 10, "exp": now + 600}, rsa_key, "RS256")
    assert stage.check(_Exchange(token))
    assert stage.cache[token][3:] == (now - 40, now + 630)
    no_times = jwt.encode({"sub": "b"}, rsa_key, "RS256")
    assert stage.check(_Exchange(no_times))
    assert stage.cache[no_times][3:] == (-math.inf, math.inf)


def test_malformed_tokens_are_answered_not_raised():
    keys = keys_from_secret(SECRET)
    header = jwt.utils.base64url_encode(b'{"alg":"HS256","kid":["x"]}').decode()
    for token in ("x", "a.b.c", "....", header + ".e30.sig", "\u00e9.a.b", "e30.e30.e30"):
        failure = verify(token, _config(keys), keys, NOW)
        assert failure.status == 401 and failure.error == "invalid_token", token


@given(st.text(max_size=300))
def test_any_token_text_is_a_failure_not_an_exception(token):
    keys = keys_from_secret(SECRET)
    assert isinstance(verify(token, _config(keys), keys, NOW), Failure)


@given(st.lists(st.tuples(st.sampled_from([b"authorization", b"cookie", b"x"]), st.binary())))
def test_find_token_takes_any_fields(fields):
    found = find_token(fields, "session")
    assert isinstance(found, str | Failure)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
_MEMBER = st.fixed_dictionaries(
    {"kty": st.sampled_from(["RSA", "EC", "OKP", "oct", "x", 5])},
    optional={
        "kid": _JSON, "alg": _JSON, "use": _JSON, "crv": st.sampled_from(["P-256", "Ed25519", 3]),
        "n": _JSON, "e": _JSON, "x": _JSON, "y": _JSON, "k": _JSON | st.just("c2VjcmV0"),
    },
)  # fmt: skip


@example([{"kty": "oct", "kid": None, "k": "c2VjcmV0", "alg": []}])  # once a TypeError
@given(st.lists(_MEMBER | _JSON, max_size=4))
def test_any_jwks_gives_keys_or_a_key_error(members):
    """A JWKS URL answers what it likes: never anything but KeyError_ out of the parse."""
    try:
        keys_from_jwks(json.dumps({"keys": members}).encode())
    except KeyError_:
        pass


def test_stage_holds_a_request_for_a_fetch_once(rsa_key):
    """An unknown kid while a fetch can run: the request waits and is started again when it
    ends; a second miss is answered (no endless waiting)."""
    source = _Source(None)  # no keys yet
    stage = JwtStage("r", JwtConfig(name="p", realm="p", jwks_url="http://x"), source)  # type: ignore[arg-type]
    token = jwt.encode(_claims(), rsa_key, algorithm="RS256", headers={"kid": "k"})
    ex = _Exchange(token)
    source.fetching = True
    assert not stage.check(ex) and ex.answer is None and len(source.waiting) == 1
    source.waiting.pop()()  # the fetch ended: the exchange starts again
    assert ex.starts == 1
    assert not stage.check(ex) and ex.answer[0] == 503 and not source.waiting  # once only
    finished = _Exchange(token)
    assert not stage.check(finished)
    finished.finished = True  # the client went away meanwhile
    source.waiting.pop()()
    assert finished.starts == 0
