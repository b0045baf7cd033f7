"""JWT validation end to end over HTTP/1.1 and HTTP/2 (h2c): each algorithm family, a JWKS
URL served on 127.0.0.1 whose keys rotate, time claims with leeway, issuer and audience,
`alg: none`, key confusion, the token in a cookie, forwarded claims and stripped spoofs,
claim matches (403) and a rate limit keyed by a claim."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from l7.jwtfetch import JwksSource
from tests.e2e.h2client import h2_get
from tests.e2e.helpers import free_port, pool_toml, wait_until

SECRET = "a-shared-secret-of-at-least-32-bytes!"


class JwksServer:
    """Serves `self.doc` as JSON at /jwks on 127.0.0.1 and counts the fetches."""

    def __init__(self) -> None:
        self.doc: dict = {"keys": []}
        self.hits = 0
        self.failing = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits += 1
                body = json.dumps(server.doc).encode()
                self.send_response(500 if server.failing else 200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def publish(self, *keys: tuple[str, object]) -> None:
        self.doc = {"keys": [_jwk(kid, key) for kid, key in keys]}

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _jwk(kid: str, private) -> dict:
    member = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    return {**member, "kid": kid, "use": "sig"}


def _pem(private) -> bytes:
    return private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture(scope="module")
def keys():
    return {
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ec": ec.generate_private_key(ec.SECP256R1()),
        "ed": ed25519.Ed25519PrivateKey.generate(),
        "a": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "b": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    }


@pytest.fixture
def jwks():
    server = JwksServer()
    yield server
    server.close()


def _config(port: int, backend, tmp, keys, jwks_url: str, held_url: str = "") -> str:
    for name in ("rsa", "ec", "ed"):
        (tmp / f"{name}.pem").write_bytes(_pem(keys[name]))
    routes = f"""
[listener.web]
bind = "127.0.0.1:{port}"
protocol = "http"
[listener.web.http]
h2c = true

[jwt.hs]
secret = "{SECRET}"
issuer = "https://idp.test"
audience = "api"
leeway = "30s"
require = ["sub"]
forward = {{sub = "X-User", email = "X-Email"}}

[jwt.rotating]
jwks_url = "{jwks_url}"
jwks_min_refetch = "100ms"
jwks_refresh = "1h"
forward = {{sub = "X-User"}}
"""
    for name, path, provider in (
        ("hs", "/hs", '"hs"'),
        ("rs", "/rs", f'{{key_file = "{tmp}/rsa.pem", algorithms = ["RS256", "PS256"]}}'),
        ("es", "/es", f'{{key_file = "{tmp}/ec.pem"}}'),
        ("ed", "/ed", f'{{key_file = "{tmp}/ed.pem"}}'),
        ("jwks", "/jwks", '"rotating"'),
        ("cookie", "/cookie", f'{{secret = "{SECRET}", cookie = "session"}}'),
        ("admin", "/admin", f'{{secret = "{SECRET}", claims = {{role = ["admin", "ops"]}}}}'),
        ("held", "/held", f'{{jwks_url = "{held_url or jwks_url}", jwks_min_refetch = "100ms"}}'),
    ):
        routes += f"""
[[listener.web.routes]]
name = "{name}"
path_prefix = "{path}/"
strip_prefix = "{path}"
pool = "p"
jwt = {provider}
"""
    routes += """
[[listener.web.routes]]
name = "limited"
path_prefix = "/limited/"
strip_prefix = "/limited"
pool = "p"
jwt = "hs"
rate_limits = [{name = "per-user", rate = 1, per = "1m", burst = 2, key = "claim:sub"}]

[[listener.web.routes]]
name = "open"
pool = "p"
"""
    return routes + pool_toml("p", [f'name = "a"\naddress = "{backend.address}"'])


def _h1(port: int, path: str, headers: list[tuple[str, str]]):
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    fields = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), fields, body


def _h2(port: int, path: str, headers: list[tuple[str, str]]):
    got = h2_get(port, path, tls=False, headers=[(k.lower(), v) for k, v in headers])
    return got.status, got.headers, got.body


def _seen(body: bytes) -> dict[str, list[str]]:
    """The backend's view of the request's headers (its /headers answer)."""
    out: dict[str, list[str]] = {}
    for name, value in json.loads(body)["headers"]:
        out.setdefault(name.lower(), []).append(value)
    return out


def _claims(**kw) -> dict:
    now = int(time.time())
    return {"sub": "alice", "iss": "https://idp.test", "aud": "api", "exp": now + 300, **kw}


def _bearer(token: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {token}")]


@pytest.mark.parametrize("client", ["h1", "h2"])
def test_jwt_stage(client, proxy, http_backends, tmp_path, keys, jwks):
    send = _h1 if client == "h1" else _h2
    (backend,) = http_backends("a")
    jwks.publish(("a", keys["a"]))
    held = JwksServer()  # a second JWKS URL, its keys changed once, late in the test
    held.publish(("b", keys["b"]))
    port = free_port()
    try:
        p = proxy(_config(port, backend, tmp_path, keys, jwks.url, held.url))
        _stage_checks(client, send, port, p, keys, jwks, held)
    finally:
        held.close()


def _stage_checks(client, send, port, p, keys, jwks, held) -> None:
    hs = jwt.encode(_claims(email="alice@example.com"), SECRET, algorithm="HS256")

    # No token: 401 with a bare challenge (RFC 6750 §3.1); other routes are open.
    status, headers, _ = send(port, "/hs/headers", [])
    assert status == 401 and headers["www-authenticate"] == 'Bearer realm="hs"'
    assert send(port, "/other", [])[0] == 200
    status, headers, _ = send(port, "/hs/", [("Authorization", "Bearer a")] * 2)
    assert status == 400 and 'error="invalid_request"' in headers["www-authenticate"]

    # A valid token: claims forwarded, the client's own X-User / X-Email dropped.
    spoof = [("X-User", "mallory"), ("X-Email", "mallory@evil")]
    status, _, body = send(port, "/hs/headers", _bearer(hs) + spoof)
    assert status == 200
    seen = _seen(body)
    assert seen["x-user"] == ["alice"] and seen["x-email"] == ["alice@example.com"]
    no_email = jwt.encode(_claims(), SECRET, algorithm="HS256")
    status, _, body = send(port, "/hs/headers", _bearer(no_email) + spoof)
    assert status == 200 and "x-email" not in _seen(body) and _seen(body)["x-user"] == ["alice"]

    def refused(path: str, token: str) -> str:
        status, headers, _ = send(port, path, _bearer(token))
        assert status == 401, (path, status)
        assert headers["www-authenticate"].startswith('Bearer realm="')
        assert 'error="invalid_token"' in headers["www-authenticate"]
        return headers["www-authenticate"]

    now = int(time.time())
    # exp and nbf, with the 30 s leeway: just past and just ahead pass, beyond it does not.
    assert send(port, "/hs/", _bearer(jwt.encode(_claims(exp=now - 10), SECRET)))[0] == 200
    assert "expired" in refused("/hs/", jwt.encode(_claims(exp=now - 120), SECRET))
    assert send(port, "/hs/", _bearer(jwt.encode(_claims(nbf=now + 10), SECRET)))[0] == 200
    assert "not valid yet" in refused("/hs/", jwt.encode(_claims(nbf=now + 120), SECRET))
    assert "issuer" in refused("/hs/", jwt.encode(_claims(iss="https://evil"), SECRET))
    assert "audience" in refused("/hs/", jwt.encode(_claims(aud="other"), SECRET))
    assert "sub claim" in refused("/hs/", jwt.encode(_claims(sub=None), SECRET))
    assert "signature" in refused(
        "/hs/", jwt.encode(_claims(), "another-secret-of-32-bytes-or-more")
    )
    assert "alg none" in refused("/hs/", jwt.encode(_claims(), None, algorithm="none"))

    # Each asymmetric family on its own key; an HS256 token made with the RSA public key's
    # bytes as the secret (algorithm confusion) is refused.
    for path, key, alg in (
        ("/rs/", keys["rsa"], "RS256"),
        ("/rs/", keys["rsa"], "PS256"),
        ("/es/", keys["ec"], "ES256"),
        ("/ed/", keys["ed"], "EdDSA"),
    ):
        assert send(port, path, _bearer(jwt.encode(_claims(), key, algorithm=alg)))[0] == 200
    assert "RS512 is not accepted" in refused(
        "/rs/", jwt.encode(_claims(), keys["rsa"], algorithm="RS512")
    )
    header = jwt.utils.base64url_encode(b'{"alg":"HS256","typ":"JWT"}')
    payload = jwt.utils.base64url_encode(json.dumps(_claims()).encode())
    mac = hmac.new(_pem(keys["rsa"]), header + b"." + payload, hashlib.sha256).digest()
    forged = (header + b"." + payload + b"." + jwt.utils.base64url_encode(mac)).decode()
    assert "HS256 is not accepted" in refused("/rs/", forged)
    assert "signature" in refused("/es/", jwt.encode(_claims(), ec.generate_private_key(
        ec.SECP256R1()), algorithm="ES256"))  # fmt: skip

    # The cookie, and the claim matches (403 insufficient_scope).
    cookie = jwt.encode(_claims(), SECRET)
    assert send(port, "/cookie/", [("Cookie", f"theme=dark; session={cookie}")])[0] == 200
    assert send(port, "/cookie/", [("Cookie", f"other={cookie}")])[0] == 401
    assert send(port, "/admin/", _bearer(jwt.encode(_claims(role="ops"), SECRET)))[0] == 200
    status, headers, _ = send(port, "/admin/", _bearer(jwt.encode(_claims(role="guest"), SECRET)))
    assert status == 403 and 'error="insufficient_scope"' in headers["www-authenticate"]

    # A rate limit keyed by the validated `sub`: bob has his own budget.
    assert [send(port, "/limited/", _bearer(hs))[0] for _ in range(3)] == [200, 200, 429]
    bob = jwt.encode(_claims(sub="bob"), SECRET)
    assert send(port, "/limited/", _bearer(bob))[0] == 200

    # A JWKS URL: key "a" served, then rotated to "b" only. The first token with the new kid
    # is held while the proxy refetches, and passes; the old key stops working.
    token_a = jwt.encode(_claims(), keys["a"], algorithm="RS256", headers={"kid": "a"})
    assert send(port, "/jwks/", _bearer(token_a))[0] == 200
    # Past jwks_min_refetch (100 ms) since the last fetch (at load, or for the request just
    # made), so the unknown kid below may refetch: within it, it is refused at once (401).
    time.sleep(0.15)
    hits = jwks.hits
    jwks.publish(("b", keys["b"]))
    token_b = jwt.encode(_claims(), keys["b"], algorithm="RS256", headers={"kid": "b"})
    status, _, body = send(port, "/jwks/headers", _bearer(token_b))
    assert status == 200 and _seen(body)["x-user"] == ["alice"] and jwks.hits == hits + 1
    status, headers, _ = send(port, "/jwks/", _bearer(token_a))
    assert status == 401 and "unknown key id" in headers["www-authenticate"]
    assert p.wait_log(r"jwks http://127\.0\.0\.1:\d+/jwks: 1 keys \(b\)")
    assert jwks.hits < 20  # refetches are rate-limited, not one per request
    if client == "h1":  # a request body sent while the request is held is forwarded whole
        held.publish(("b", keys["b"]), ("c", keys["a"]))
        token_c = jwt.encode(_claims(), keys["a"], algorithm="RS256", headers={"kid": "c"})
        body = b"x" * 300_000
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(
                b"POST /held/digest HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                b"Authorization: Bearer " + token_c.encode() + b"\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body) + body
            )
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        assert data.startswith(b"HTTP/1.1 200")
        assert data.endswith(f"{len(body)} {hashlib.sha256(body).hexdigest()}".encode())


def test_jwks_down_then_up_and_kept_over_reload(proxy, http_backends, tmp_path, keys, jwks):
    """Before the first good fetch a JWKS route answers 503 (the proxy's problem, not the
    client's); a failed fetch is retried after jwks_min_refetch; a reload keeps the keys."""
    (backend,) = http_backends("a")
    jwks.failing = True
    jwks.publish(("a", keys["a"]))
    port, admin = free_port(), free_port()
    config = f'[admin]\nbind = "127.0.0.1:{admin}"\n' + _config(
        port, backend, tmp_path, keys, jwks.url
    )
    p = proxy(config)
    token = jwt.encode(_claims(), keys["a"], algorithm="RS256", headers={"kid": "a"})
    assert p.wait_log(r"jwks http://127\.0\.0\.1:\d+/jwks: fetch failed \(ValueError: status 500")
    status, headers, body = _h1(port, "/jwks/", _bearer(token))
    assert status == 503 and headers["retry-after"] == "1" and b"not available yet" in body
    jwks.failing = False
    assert wait_until(lambda: _h1(port, "/jwks/", _bearer(token))[0] == 200, 10)
    hits = jwks.hits
    assert p.reload(config)
    assert _h1(port, "/jwks/", _bearer(token))[0] == 200
    assert jwks.hits == hits  # the cached keys outlived the reload: no new fetch
    with socket.create_connection(("127.0.0.1", admin), timeout=5) as s:
        s.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    stages = {
        r["route"]: r
        for r in json.loads(data.split(b"\r\n\r\n", 1)[1])["listeners"][0]["route_jwt"]
    }
    assert stages["jwks"]["accepted"] == 1 and stages["jwks"]["jwks"]["keys"] == 1
    with socket.create_connection(("127.0.0.1", admin), timeout=5) as s:
        s.sendall(b"GET /config HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200")
    routes = json.loads(data.split(b"\r\n\r\n", 1)[1])["listeners"][0]["routes"]
    assert routes[0]["jwt"]["forward"] == [["sub", "x-user"], ["email", "x-email"]]
    assert SECRET not in data.decode()  # the key set is not shown


def test_jwt_over_http3(proxy, http_backends, tmp_path):
    """The same stage for an HTTP/3 client (quic/ hands requests to the same pipeline)."""
    pytest.importorskip("aioquic")
    from tests.e2e.h3client import H3Client
    from tests.e2e.helpers import make_cert

    (backend,) = http_backends("a")
    port = free_port()
    cert, key = make_cert(tmp_path, "localhost")
    proxy(
        f'[listener.web]\nbind = "127.0.0.1:{port}"\nprotocol = "https"\n'
        f'[[listener.web.certs]]\ncert = "{cert}"\nkey = "{key}"\n'
        "[listener.web.http]\nhttp3 = true\n"
        '[[listener.web.routes]]\nname = "api"\npool = "p"\n'
        f'jwt = {{secret = "{SECRET}", forward = {{sub = "X-User"}}}}\n'
        + pool_toml("p", [f'name = "a"\naddress = "{backend.address}"'])
    )
    client = H3Client(port)
    try:
        status, headers, _ = client.request("GET", "/headers")
        assert status == 401 and headers["www-authenticate"] == 'Bearer realm="api"'
        token = jwt.encode(_claims(), SECRET).encode()
        spoof = [(b"authorization", b"Bearer " + token), (b"x-user", b"mallory")]
        status, _, body = client.request("GET", "/headers", headers=spoof)
        assert status == 200 and _seen(body)["x-user"] == ["alice"]
        forged = jwt.encode(_claims(), "another-secret-of-32-bytes-or-more").encode()
        status, headers, _ = client.request(
            "GET", "/headers", headers=[(b"authorization", b"Bearer " + forged)]
        )
        assert status == 401 and 'error="invalid_token"' in headers["www-authenticate"]
    finally:
        client.close()


def test_jwks_fetch_times_out_retries_and_stops_when_unused():
    """A JWKS server that accepts and never answers: each fetch ends at jwks_timeout and is
    retried; a source no stage uses any more closes itself at its next timer."""
    silent = socket.create_server(("127.0.0.1", 0))  # the kernel accepts; nobody answers
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/jwks"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        closed: list[JwksSource] = []
        source = JwksSource(loop, url, on_closed=closed.append)
        source.timeout = 0.3
        source.schedule.min_refetch = 0.1
        lease = source.lease()  # what a JwtStage holds
        source.start()
        for _ in range(200):
            if source.failures >= 2:
                break
            await asyncio.sleep(0.05)
        assert source.failures >= 2 and source.keys is None and not source.closed
        del lease  # no stage holds the source now
        for _ in range(200):
            if closed:
                break
            await asyncio.sleep(0.05)
        assert closed == [source] and source.closed

    try:
        asyncio.run(main())
    finally:
        silent.close()
