"""`l4lb reload|drain|enable|plan` against a running `l4lb up`, through its admin API."""

from __future__ import annotations

import subprocess
import sys

from tests.e2e.helpers import free_port, name_of, pool_toml


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "l4lb", *args], capture_output=True, text=True, timeout=30
    )


def config(port: int, admin: int, backends, balance: str = "round_robin") -> str:
    # workers = 1 in every file, so that `plan` compares like with like (the Proxy helper
    # would add it to the running config only).
    return (
        "[global]\nworkers = 1\n"
        f'[admin]\nbind = "127.0.0.1:{admin}"\n'
        f'[listener.l]\nbind = "127.0.0.1:{port}"\npool = "p"\n'
        + pool_toml("p", backends, balance=f'"{balance}"')
    )


def test_drain_enable_reload_and_plan(proxy, backends, tmp_path):
    a, b = backends("a", "b")
    port, admin = free_port(), free_port()
    p = proxy(config(port, admin, [a, b]))
    where = ("--admin", f"127.0.0.1:{admin}")

    result = cli("drain", "p", "b", *where)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "p/b: draining (0 active)"
    assert {name_of(port) for _ in range(4)} == {"a"}

    assert cli("reload", *where).stdout.startswith("reloaded")
    assert {name_of(port) for _ in range(4)} == {"a"}  # a drain outlives a reload

    assert cli("enable", "p", "b", *where).returncode == 0
    assert {name_of(port) for _ in range(4)} == {"a", "b"}

    new = tmp_path / "new.toml"
    new.write_text(config(port, admin, [a], balance="least_conn"))
    result = cli("plan", str(new), *where)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "~ pool p: balance 'round_robin' -> 'least_conn'",
        "- server p/b: drains, then leaves",
    ]

    p.path.write_text(config(port, admin, [a, b], balance="nope"))
    result = cli("reload", *where)
    assert result.returncode == 1
    assert "unknown algorithm 'nope'" in result.stderr
    assert {name_of(port) for _ in range(4)} == {"a", "b"}  # still the old config

    result = cli("drain", "p", "zz", *where)
    assert result.returncode == 1 and "no server named 'zz'" in result.stderr


def test_cli_without_a_running_instance_explains():
    result = cli("reload", "--admin", f"127.0.0.1:{free_port()}")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "cannot reach the admin API" in result.stderr


def test_admin_port_in_use_is_a_clear_error(tmp_path, backends):
    import socket

    (a,) = backends("a")
    busy = socket.create_server(("127.0.0.1", 0))
    path = tmp_path / "c.toml"
    path.write_text(config(free_port(), busy.getsockname()[1], [a]))
    result = subprocess.run(
        [sys.executable, "-m", "l4lb", "up", str(path), "--no-tui"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    busy.close()
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "cannot listen on" in result.stderr and "(admin)" in result.stderr


def test_a_quick_drain_and_enable_leave_events(proxy, backends):
    import json
    import urllib.request

    (a,) = backends("a")
    port, admin = free_port(), free_port()
    proxy(config(port, admin, [a]))
    where = ("--admin", f"127.0.0.1:{admin}")
    assert cli("drain", "p", "a", *where).returncode == 0
    assert cli("enable", "p", "a", *where).returncode == 0  # well within a stats tick
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/status", timeout=10) as resp:
        events = [(e["kind"], e["text"]) for e in json.load(resp)["events"]]
    ours = [(kind, text) for kind, text in events if kind in ("drain", "enable")]
    assert [kind for kind, _ in ours] == ["enable", "drain"], events  # newest first
    assert all(t.startswith("p/a ") and t.endswith(", from the admin API") for _, t in ours)
    assert ours[0][1].endswith(" up, from the admin API")


def test_top_without_a_terminal_prints_plain_summaries(proxy, backends):
    """`ssh host l4lb top` (no -t) or a pipe: no terminal to draw on, so plain text."""
    (a,) = backends("a")
    port, admin = free_port(), free_port()
    proxy(config(port, admin, [a]))
    where = ("--admin", f"127.0.0.1:{admin}")
    once = subprocess.run(
        [sys.executable, "-m", "l4lb", "top", "--once", *where],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert once.returncode == 0, once.stderr
    assert once.stdout.startswith("l4lb ") and "Traceback" not in once.stderr
    assert f"listener l tcp 127.0.0.1:{port} active=0" in once.stdout
    assert f"  server p/a {a.address} up weight=1" in once.stdout

    top = subprocess.Popen(
        [sys.executable, "-m", "l4lb", "top", "--interval", "0.2", *where],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        heads = 0
        for _ in range(200):  # a bounded read: two summaries are about 10 lines
            line = top.stdout.readline()
            if not line:
                break
            heads += line.startswith("l4lb ")
            if heads == 2:
                break
        assert heads == 2, top.stderr.read() if top.poll() is not None else "too few"
    finally:
        top.kill()
        top.wait()
