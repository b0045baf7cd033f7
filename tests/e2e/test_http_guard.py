"""A route's access rules (403) and rate limits (429) end to end, HTTP/1.1 and HTTP/2."""

from __future__ import annotations

import json
import socket
import subprocess

from tests.e2e.helpers import free_port, make_cert, pool_toml

ROUTES = """
[[listener.web.routes]]
name = "admin"
path_prefix = "/admin"
pool = "p"
access = {allow = ["10.0.0.0/8"]}
[[listener.web.routes]]
name = "api"
path_prefix = "/api"
pool = "p"
rate_limits = [
  {name = "per-key", rate = 1, per = "1m", burst = 2, key = "header:x-api-key"},
  {name = "per-client", rate = 1, per = "1m", burst = 3},
]
[[listener.web.routes]]
name = "main"
pool = "p"
"""


def _config(port: int, backend, admin: int, https: str = "") -> str:
    head = f'[admin]\nbind = "127.0.0.1:{admin}"\n'
    head += f'[listener.web]\nbind = "127.0.0.1:{port}"\n'
    head += 'protocol = "https"\n' if https else 'protocol = "http"\n'
    return head + https + ROUTES + pool_toml("p", [f'name = "a"\naddress = "{backend.address}"'])


def _get(port: int, path: str, extra: str = "") -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def _status(admin: int) -> dict:
    with socket.create_connection(("127.0.0.1", admin), timeout=5) as s:
        s.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return json.loads(data.split(b"\r\n\r\n", 1)[1])


def test_route_access_and_rate_limits_http1(proxy, http_backends):
    (a,) = http_backends("a")
    port, admin = free_port(), free_port()
    p = proxy(_config(port, a, admin))
    status, headers, body = _get(port, "/admin/x")
    assert status == 403 and b"access rules" in body and "x-request-id" in headers
    assert _get(port, "/other")[0] == 200  # other routes are open
    # Per API key: a burst of 2; another key has its own budget.
    assert [_get(port, "/api", "X-Api-Key: k1\r\n")[0] for _ in range(2)] == [200, 200]
    status, headers, body = _get(port, "/api", "X-Api-Key: k1\r\n")
    assert status == 429 and b"rate limit per-key" in body
    assert 1 <= int(headers["retry-after"]) <= 60
    assert headers["ratelimit-policy"] == '"per-key";q=1;w=60'
    assert headers["ratelimit"].startswith('"per-key";r=0;t=')
    # Other keys pass per-key; the client's own burst of 3 ends at the second of them (a
    # request refused by per-key was not counted by per-client).
    assert _get(port, "/api", "X-Api-Key: k2\r\n")[0] == 200
    status, headers, _ = _get(port, "/api", "X-Api-Key: k3\r\n")
    assert status == 429 and headers["ratelimit-policy"] == '"per-client";q=1;w=60'
    assert p.wait_log(r"route api: 127\.0\.0\.1 over rate limit per-client \(429\)")
    guards = {g["route"]: g for g in _status(admin)["listeners"][0]["route_guards"]}
    assert guards["admin"]["denied"] == 1
    limits = {lim["name"]: lim for lim in guards["api"]["limits"]}
    assert limits["per-key"]["rejected"] == 1 and limits["per-client"]["rejected"] == 1
    assert limits["per-key"]["requests"] == 5 and limits["per-client"]["requests"] == 4
    with socket.create_connection(("127.0.0.1", admin), timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        metrics = b""
        while chunk := s.recv(65536):
            metrics += chunk
    assert (
        b'l4lb_route_ratelimit_rejected_total{listener="web",route="api",limit="per-key"} 1'
        in metrics
    )
    # A reload that keeps the limit keeps its state: still refused.
    assert p.reload(_config(port, a, admin))
    assert _get(port, "/api", "X-Api-Key: k1\r\n")[0] == 429


def test_same_answers_over_http2(proxy, http_backends, tmp_path):
    (a,) = http_backends("a")
    port, admin = free_port(), free_port()
    cert, key = make_cert(tmp_path, "localhost")
    certs = f'[[listener.web.certs]]\ncert = "{cert}"\nkey = "{key}"\n'
    proxy(_config(port, a, admin, https=certs))

    def curl(path: str, *args: str) -> str:
        out = subprocess.run(
            ["curl", "-sk", "-i", "--http2", "-m", "10", *args, f"https://localhost:{port}{path}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return out.stdout

    out = curl("/admin/x")
    assert out.startswith("HTTP/2 403") and "access rules" in out
    assert curl("/api", "-H", "X-Api-Key: k")[:12] == "HTTP/2 200 \n"[:12]
    curl("/api", "-H", "X-Api-Key: k")
    out = curl("/api", "-H", "X-Api-Key: k")
    assert out.startswith("HTTP/2 429")
    assert 'ratelimit-policy: "per-key";q=1;w=60' in out and "retry-after:" in out
