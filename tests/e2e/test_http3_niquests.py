"""HTTP/3 from an independent implementation: niquests on qh3 (not aioquic, which l4lb and
tests/e2e/h3client.py share, so a bug common to both would go unseen), in a subprocess of
its own virtualenv (.venv-niquests, made by scripts/setup, or here once when missing: its
urllib3 fork shadows urllib3 and cannot share .venv)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.helpers import free_port, make_cert, pool_toml

ROOT = Path(__file__).parents[2]
VENV = ROOT / ".venv-niquests"
CLIENT = Path(__file__).with_name("niquests_client.py")


@pytest.fixture(scope="session")
def niquests_python() -> Path:
    """The niquests virtualenv's python, made once if missing; skip if pip cannot install."""
    python = VENV / "bin" / "python"
    check = [str(python), "-c", "import niquests, qh3"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    made = subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)],
                          capture_output=True, text=True)  # fmt: skip
    if made.returncode != 0:
        pytest.skip(f"cannot make {VENV}: {made.stderr.strip()[-300:]}")
    pip = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "niquests",
         "qh3"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if pip.returncode != 0 or subprocess.run(check, capture_output=True).returncode != 0:
        pytest.skip(f"pip cannot install niquests and qh3: {pip.stderr.strip()[-300:]}")
    return python


def run(python: Path, port: int, mode: str) -> list[dict]:
    out = subprocess.run([str(python), str(CLIENT), f"https://127.0.0.1:{port}", mode],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


@pytest.fixture
def site(proxy, http_backends, tmp_path):
    """l4lb with an `https` listener, HTTP/3 on, routing 127.0.0.1 to backend a (any other
    host: no route, l4lb's own 404)."""
    (a,) = http_backends("a")
    cert, key = make_cert(tmp_path, "localhost")
    port = free_port()
    p = proxy(
        f'[listener.web]\nbind = "127.0.0.1:{port}"\nprotocol = "https"\n'
        f'[[listener.web.certs]]\ncert = "{cert}"\nkey = "{key}"\n'
        "[listener.web.http]\nhttp3 = true\n"
        '[[listener.web.routes]]\nname = "main"\nhost = ["127.0.0.1"]\npool = "a"\n'
        + pool_toml("a", [f'address = "{a.address}"'])
    )
    return p, port, a


def test_niquests_over_http3(niquests_python, site):
    p, port, a = site
    got = run(niquests_python, port, "h3")
    assert [r["version"] for r in got] == [30] * len(got), got
    home, post, missing, headers, big = got
    assert (home["status"], home["body"]) == (200, "a\n")
    assert home["headers"]["alt-svc"] == f'h3=":{port}"; ma=86400'
    sent = b"hello niquests" * 1000
    digest = hashlib.sha256(sent).hexdigest()
    assert (post["status"], post["body"]) == (200, f"{len(sent)} {digest}")
    assert missing["status"] == 404 and a.requests == 4  # l4lb answered, nothing forwarded
    assert headers["status"] == 200 and headers["headers"]["x-request-id"] == "nq-1"
    seen = dict(json.loads(headers["body"])["headers"])
    assert seen["x-client"] == "niquests" and seen["x-request-id"] == "nq-1"
    assert seen["host"] == f"127.0.0.1:{port}"
    assert seen["x-forwarded-proto"] == "https" and seen["x-forwarded-for"] == "127.0.0.1"
    assert (big["status"], len(big["body"])) == (200, 1 << 20)
    assert big["body"] == "b" * (1 << 20)
    assert p.wait_log(r"http=3")


def test_niquests_moves_to_http3_by_alt_svc(niquests_python, site):
    """A default niquests session starts on TCP and takes the Alt-Svc offer, as browsers do."""
    _, port, a = site
    got = run(niquests_python, port, "alt-svc")
    versions = [r["version"] for r in got]
    assert versions[0] in (11, 20) and versions[-1] == 30, versions
    assert all(r["status"] == 200 and r["body"] == "a\n" for r in got)
    assert a.requests == 3
