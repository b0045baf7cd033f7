"""`global.workers = 2`: a supervisor and two worker processes sharing the listening port,
end to end with real processes, real backends and the supervisor's admin API. Waits are
generous bounds, never timing assertions."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from tests.e2e.helpers import Backend, Proxy, free_port, name_of, pool_toml, wait_until


def config(port: int, admin: int, servers: list[Backend], balance: str = "round_robin") -> str:
    return (
        '[global]\nworkers = 2\ndrain_timeout = "5s"\n'
        f'[admin]\nbind = "127.0.0.1:{admin}"\n'
        f'[listener.l]\nbind = "127.0.0.1:{port}"\npool = "p"\n'
        + pool_toml("p", servers, balance=f'"{balance}"')
    )


def get(admin: int, path: str, method: str = "GET") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=10)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def status(admin: int) -> dict:
    code, body = get(admin, "/status")
    assert code == 200, body
    return json.loads(body)


def start(proxy, text: str) -> Proxy:
    p = proxy(text)
    assert p.wait_log(r"all 2 workers serving", 20), p.log()
    return p


def worker_pids(admin: int) -> list[int]:
    return [w["pid"] for w in status(admin)["workers"] if w["alive"]]


def name_retrying(port: int, within: float = 10.0) -> str:
    """The backend's name line, retrying for up to `within` s connections that are refused,
    reset or closed before the name (a connection queued on, or relayed by, a worker that
    was just killed is closed by the kernel)."""
    deadline = time.monotonic() + within
    while True:
        try:
            name = name_of(port)
            if name:  # empty: closed by a worker killed mid-connection
                return name
        except OSError:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            return ""
        time.sleep(0.05)


def restarted(admin: int, index: int, old_pid: int) -> bool:
    """Worker `index` runs again under a new pid and has reported."""
    w = status(admin)["workers"][index]
    return w["alive"] and w["pid"] != old_pid and w["report_ago"] is not None


def server_totals(snap: dict) -> dict[str, int]:
    return {s["name"]: s["total"] for p in snap["pools"] for s in p["servers"]}


def test_two_workers_share_the_port_and_the_admin_api_sums_them(proxy, backends):
    """Also the measurement quoted in docs/WORKERS.md (run with -s to see it)."""
    a, b = backends("a", "b")
    port, admin = free_port(), free_port()
    p = start(proxy, config(port, admin, [a, b]))
    n = 400
    names = [name_of(port) for _ in range(n)]
    assert wait_until(lambda: status(admin)["listeners"][0]["total"] == n, 10)
    snap = status(admin)
    pids = {w["pid"] for w in snap["workers"]}
    assert len(pids) == 2 and p.proc.pid not in pids and snap["pid"] == p.proc.pid
    per_worker = [w["servers"]["p"] for w in snap["workers"]]
    assert all(w["total"] > 0 for w in snap["workers"]), snap["workers"]
    assert sum(w["total"] for w in snap["workers"]) == n
    totals = server_totals(snap)
    assert totals == {"a": names.count("a"), "b": names.count("b")}
    assert a.accepted + b.accepted == n
    # Round robin is per worker: each alternates its own share, so the whole is within one
    # connection per worker of an even split.
    assert all(abs(w["a"] - w["b"]) <= 1 for w in per_worker), per_worker
    assert abs(totals["a"] - totals["b"]) <= 2
    print(f"\n{n} connections, workers=2, round_robin: {totals}; per worker: {per_worker}")

    code, body = get(admin, "/metrics")
    assert code == 200
    text = body.decode()
    assert f'l4lb_listener_connections_total{{listener="l"}} {n}' in text
    counts = re.findall(r'l4lb_server_connect_seconds_count\{pool="p",server="\w"\} (\d+)', text)
    assert sum(map(int, counts)) == n
    assert p.stop() == 0


def test_hash_sends_a_client_to_one_server_whichever_worker_accepts(proxy, backends):
    a, b, c = backends("a", "b", "c")
    port, admin = free_port(), free_port()
    start(proxy, config(port, admin, [a, b, c], balance="hash"))
    clients = [f"127.0.0.{i}" for i in range(2, 22)]
    seen = {ip: {name_of(port, source=ip) for _ in range(10)} for ip in clients}
    assert all(len(names) == 1 for names in seen.values()), seen
    assert len(set().union(*seen.values())) > 1  # and the clients are spread
    assert wait_until(lambda: status(admin)["listeners"][0]["total"] == 200, 10)
    # Each client's ten connections came from ten source ports, hashed over both workers.
    assert all(w["total"] > 0 for w in status(admin)["workers"])


def test_a_killed_worker_is_restarted_and_connections_go_on(proxy, backends):
    a, b = backends("a", "b")
    port, admin = free_port(), free_port()
    p = start(proxy, config(port, admin, [a, b]))
    for _ in range(20):
        name_of(port)
    assert wait_until(lambda: status(admin)["listeners"][0]["total"] == 20, 10)
    victim = status(admin)["workers"][1]["pid"]
    stop = threading.Event()
    served, failures = [0], []

    def clients() -> None:
        while not stop.is_set():
            try:
                assert name_retrying(port) in ("a", "b")
                served[0] += 1
            except (OSError, AssertionError) as exc:
                failures.append(repr(exc))

    thread = threading.Thread(target=clients)
    thread.start()
    try:
        os.kill(victim, signal.SIGKILL)
        assert p.wait_log(rf"worker 1 \(pid {victim}\) was killed by SIGKILL; restarting", 10)

        assert wait_until(lambda: restarted(admin, 1, victim), 20), status(admin)["workers"]
        before = served[0]
        assert wait_until(lambda: served[0] > before + 20, 10)
    finally:
        stop.set()
        thread.join(30)
    assert failures == []
    # The count of the dead worker is kept: the instance's total never goes back.
    assert wait_until(lambda: status(admin)["listeners"][0]["total"] >= 20 + served[0], 10)
    snap = status(admin)
    assert snap["workers"][1]["restarts"] == 1
    assert any(e["kind"] == "worker_exit" for e in snap["events"])
    assert p.stop() == 0


def test_reload_changes_every_worker_while_connections_flow(proxy, backends):
    b1, b2, b3 = backends("b1", "b2", "b3")
    port, admin = free_port(), free_port()
    p = start(proxy, config(port, admin, [b1, b2]))
    pids = worker_pids(admin)
    stop = threading.Event()
    failures: list[str] = []

    def short_loop() -> None:
        while not stop.is_set():
            try:
                if name_of(port) not in ("b1", "b2", "b3"):
                    failures.append("short: wrong name")
            except OSError as exc:
                failures.append(f"short: {exc!r}")

    def stream() -> None:
        sent, received = hashlib.sha256(), hashlib.sha256()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.recv(3)
                while not stop.is_set():
                    chunk = os.urandom(16384)
                    sent.update(chunk)
                    s.sendall(chunk)
                    got = 0
                    while got < len(chunk):
                        data = s.recv(65536)
                        if not data:
                            raise ConnectionError("stream cut")
                        received.update(data)
                        got += len(data)
            if sent.digest() != received.digest():
                failures.append("stream: checksum mismatch")
        except OSError as exc:
            failures.append(f"stream: {exc!r}")

    threads = [threading.Thread(target=short_loop) for _ in range(2)]
    threads.append(threading.Thread(target=stream))
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        p.path.write_text(config(port, admin, [b2, b3], balance="least_conn"))
        p.proc.send_signal(signal.SIGHUP)
        for i in range(2):
            assert p.wait_log(rf"worker {i}: reload 1 applied", 10), p.log()
        assert re.search(  # and what changed, as `l4lb plan` says it
            r"reload 1 validated; SIGHUP sent to 2 worker\(s\): \d+ changes: "
            r"~ pool p: balance 'round_robin' -> 'least_conn'",
            p.log(),
        ), p.log()
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert failures == []
    assert {name_of(port) for _ in range(30)} <= {"b2", "b3"}
    assert worker_pids(admin) == pids  # reloaded in place, not restarted
    snap = status(admin)
    assert snap["config"]["reloads"] == 1
    assert [p["balance"] for p in snap["pools"]] == ["least_conn"]
    assert p.stop() == 0


def test_a_bad_config_on_reload_keeps_everything_running(proxy, backends):
    a, b = backends("a", "b")
    port, admin = free_port(), free_port()
    p = start(proxy, config(port, admin, [a, b]))
    pids = worker_pids(admin)
    p.path.write_text(config(port, admin, [a, b], balance="nope"))
    p.proc.send_signal(signal.SIGHUP)
    assert p.wait_log(r"reload failed; still running the previous config", 10)
    code, body = get(admin, "/reload", "POST")
    assert code == 409 and b"unknown algorithm 'nope'" in body
    assert not re.search(r"worker \d: SIGHUP", p.log())  # the workers were left alone
    assert {name_of(port) for _ in range(10)} == {"a", "b"}
    assert worker_pids(admin) == pids
    assert status(admin)["config"]["reloads"] == 0
    assert p.stop() == 0


def test_drain_reaches_every_worker_and_a_restarted_one(proxy, backends):
    a, b = backends("a", "b")
    port, admin = free_port(), free_port()
    p = start(proxy, config(port, admin, [a, b]))
    where = ("--admin", f"127.0.0.1:{admin}")
    drain = subprocess.run(
        [sys.executable, "-m", "l4lb", "drain", "p", "b", *where],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert drain.returncode == 0 and drain.stdout.strip() == "p/b: draining (0 active)"
    assert {name_of(port) for _ in range(20)} == {"a"}
    victim = status(admin)["workers"][0]["pid"]
    os.kill(victim, signal.SIGKILL)
    assert wait_until(lambda: restarted(admin, 0, victim), 20), status(admin)["workers"]
    assert {name_retrying(port) for _ in range(20)} == {"a"}  # the new worker drains b too
    code, _ = get(admin, "/servers/p/b/enable", "POST")
    assert code == 200
    assert {name_of(port) for _ in range(20)} == {"a", "b"}
    assert p.stop() == 0


def test_sigterm_drains_every_worker_and_exits_zero(proxy, backends):
    (a,) = backends("a")
    port, admin = free_port(), free_port()
    p = start(proxy, config(port, admin, [a]))
    pids = worker_pids(admin)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        assert s.recv(2) == b"a\n"
        p.proc.send_signal(signal.SIGTERM)
        assert p.wait_log(r"draining 1 connection", 10)
        s.sendall(b"still here")
        assert s.recv(100) == b"still here"  # the established connection goes on
        with pytest.raises(OSError):
            name_of(port)  # while nothing new is accepted
    assert p.proc.wait(20) == 0
    assert "Traceback" not in p.log()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_demo_backends_and_self_signed_certificate_are_made_once(proxy, tmp_path):
    port, tls_port, admin = free_port(), free_port(), free_port()
    demo = [free_port(), free_port()]
    text = (
        f'[global]\nworkers = 2\n[admin]\nbind = "127.0.0.1:{admin}"\n'
        f"[demo]\nbackends = {json.dumps([f'127.0.0.1:{d}' for d in demo])}\n"
        f'[listener.web]\nbind = "127.0.0.1:{port}"\npool = "demo"\n'
        f'[listener.secure]\nbind = "127.0.0.1:{tls_port}"\nprotocol = "tls"\npool = "demo"\n'
        '[[listener.secure.certs]]\ncert = "var/demo.crt"\nkey = "var/demo.key"\n'
        "selfsigned = true\n"
        + pool_toml("demo", [f'address = "127.0.0.1:{d}"\nname = "demo-{d}"' for d in demo])
    )
    p = Proxy(tmp_path, text)
    try:
        assert p.wait_log(r"all 2 workers serving", 20), p.log()
        assert (tmp_path / "var" / "demo.crt").exists()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/")
        assert conn.getresponse().status == 200
        result = subprocess.run(
            [
                "curl",
                "-sk",
                f"https://localhost:{tls_port}/",
                "--resolve",
                f"localhost:{tls_port}:127.0.0.1",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.stdout.startswith("demo-"), result
        assert "Address already in use" not in p.log()
    finally:
        assert p.stop() == 0


def test_taken_ports_are_a_clear_error_before_any_worker_starts(tmp_path, backends):
    (a,) = backends("a")
    busy = socket.create_server(("127.0.0.1", 0))
    taken = busy.getsockname()[1]
    path = tmp_path / "c.toml"
    for port, admin, what in ((taken, free_port(), ""), (free_port(), taken, " (admin)")):
        path.write_text(config(port, admin, [a]))
        result = subprocess.run(
            [sys.executable, "-m", "l4lb", "up", str(path), "--no-tui"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert f"cannot listen on 127.0.0.1:{taken}{what}" in result.stderr
        assert "worker 0 started" not in result.stderr
    busy.close()
