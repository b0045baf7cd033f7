"""`GET /ready` and `l4lb ready` (keepalived's track script) against a running `l4lb up`: ready
only while its listeners accept and its pool has a server up, for one process and for workers."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import pytest

from tests.e2e.helpers import free_port, pool_toml, wait_until


def ready(admin: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "l4lb", "ready", "--admin", f"127.0.0.1:{admin}"],
        capture_output=True,
        text=True,
        timeout=30,
    )


def becomes(admin: int, code: int, text: str = "") -> subprocess.CompletedProcess[str]:
    """Poll `l4lb ready` (bounded) until it exits `code` with `text` in its output."""
    last: list[subprocess.CompletedProcess[str]] = []

    def check() -> bool:
        last[:] = [ready(admin)]
        result = last[0]
        return result.returncode == code and text in result.stdout + result.stderr

    assert wait_until(check, timeout=15, interval=0.1), last[0]
    return last[0]


@pytest.mark.parametrize("workers", [1, 2])
def test_ready_follows_servers_drain_and_shutdown(proxy, backends, workers):
    (a,) = backends("a")
    port, admin = free_port(), free_port()
    health = {"type": '"tcp"', "interval": '"200ms"', "timeout": '"200ms"', "rise": 1, "fall": 1}
    p = proxy(
        f'[global]\nworkers = {workers}\ndrain_timeout = "10s"\n'
        f'[admin]\nbind = "127.0.0.1:{admin}"\n'
        f'[listener.l]\nbind = "127.0.0.1:{port}"\npool = "p"\n'
        + pool_toml("p", [a], health=health)
    )
    assert becomes(admin, 0).stdout == "ready\n"

    a.stop()
    result = becomes(admin, 1, "pool p has no server up (a down)")
    assert result.stderr.startswith("not ready: ") and "Traceback" not in result.stderr
    a.start()  # same port
    becomes(admin, 0)

    drain = [sys.executable, "-m", "l4lb", "drain", "p", "a", "--admin", f"127.0.0.1:{admin}"]
    assert subprocess.run(drain, capture_output=True, timeout=30).returncode == 0
    becomes(admin, 1, "(a draining)")
    enable = [*drain[:3], "enable", *drain[4:]]
    assert subprocess.run(enable, capture_output=True, timeout=30).returncode == 0
    becomes(admin, 0)

    # A connection held open keeps the shutdown draining: no longer ready meanwhile, so
    # keepalived moves the address before the instance goes away.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as held:
        assert held.recv(100) == b"a\n"
        p.proc.send_signal(signal.SIGTERM)
        becomes(admin, 1, "listener l is not accepting connections (stopping)")
    p.proc.wait(timeout=20)


def test_ready_without_an_instance_is_not_ready():
    result = ready(free_port())
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "not ready: cannot reach the admin API" in result.stderr
