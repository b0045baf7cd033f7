"""The per-request cost of the JWT stage (l7/jwtstage.py), in-process: µs of CPU per accepted
request, for HS256 and RS256 (and ES256, EdDSA with `--all`), token lookup, signature,
claims, and the forwarded `X-User` header included; no sockets. "repeat" is a client sending
its token again (the stage's verified-token cache answers); "first" is a token never seen
(`--first` of them: signing them takes a while).

    .venv/bin/python bench/jwt_inproc.py [-n 20000] [--rounds 3] [--all]

Compare with `bench/http_inproc.py`'s µs per request for the whole pipeline: the stage adds
its number to each request on a route with `jwt`. Pin it (`taskset -c 0`) while something
else runs.
"""

from __future__ import annotations

import argparse
import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from l7.jwtconf import JwtConfig
from l7.jwtkeys import keys_from_pem, keys_from_secret
from l7.jwtstage import JwtStage
from l7.model import Request

SECRET = b"k" * 32


class _Exchange:
    """What the stage reads and writes on an accepted request."""

    __slots__ = ("claims", "request")

    def __init__(self, request: Request) -> None:
        self.request = request
        self.claims = None


def _pem(private) -> bytes:
    return private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _cases(every: bool) -> list[tuple[str, object, object]]:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cases = [
        ("HS256", SECRET, keys_from_secret(SECRET)),
        ("RS256", rsa_key, keys_from_pem(_pem(rsa_key))),
    ]
    if every:
        ec_key = ec.generate_private_key(ec.SECP256R1())
        ed_key = ed25519.Ed25519PrivateKey.generate()
        cases += [
            ("ES256", ec_key, keys_from_pem(_pem(ec_key))),
            ("EdDSA", ed_key, keys_from_pem(_pem(ed_key))),
        ]
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--first", type=int, default=2000, help="distinct tokens")
    parser.add_argument("--all", action="store_true", help="ES256 and EdDSA too")
    args = parser.parse_args()
    claims = {"sub": "alice", "iss": "https://idp", "aud": "api", "exp": time.time() + 86400}
    for alg, signing, keys in _cases(args.all):
        config = JwtConfig(
            name="b",
            realm="b",
            keys=keys,  # type: ignore[arg-type]
            issuers=("https://idp",),
            audiences=("api",),
            forward=(("sub", "x-user"),),
        )
        stage = JwtStage("bench", config, None)
        token = jwt.encode(claims, signing, algorithm=alg)  # type: ignore[arg-type]
        repeat = _best(stage, [token] * args.n, args.rounds)
        first = [
            jwt.encode({**claims, "jti": str(i)}, signing, algorithm=alg)  # type: ignore[arg-type]
            for i in range(args.first)
        ]
        stage.cache.clear()
        once = _best(stage, first, 1)
        print(f"{alg}: repeat {repeat:.1f} µs, first {once:.1f} µs per request")


def _best(stage: JwtStage, tokens: list[str], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        exchanges = [
            _Exchange(
                Request(
                    "GET",
                    "/",
                    [
                        (b"host", b"example.com"),
                        (b"user-agent", b"bench"),
                        (b"authorization", b"Bearer " + token.encode()),
                    ],
                )
            )
            for token in tokens
        ]
        start = time.process_time()
        for ex in exchanges:
            stage.check(ex)
        best = min(best, time.process_time() - start)
        assert exchanges[-1].claims is not None
    return best / len(tokens) * 1e6


if __name__ == "__main__":
    main()
