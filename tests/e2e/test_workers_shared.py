"""`workers = 2` with the instance's shared memory (`l4lb.shared`): least connections and
`max_connections` over both workers, health checks once per instance, per-client limits and
route rate limits as one budget. Real processes, sockets and backends; the tests check that
both workers took part where the stats show it (a refused connection is not counted per
worker), so that they could fail if the state were per worker."""

from __future__ import annotations

import math
import os
import re
import signal
import socket
import time

from tests.e2e.helpers import free_port, pool_toml, wait_until
from tests.e2e.test_workers import start, status


def head(port: int, admin: int, listener: str = "") -> str:
    return (
        '[global]\nworkers = 2\ndrain_timeout = "1s"\n'
        f'[admin]\nbind = "127.0.0.1:{admin}"\n'
        f'[listener.l]\nbind = "127.0.0.1:{port}"\npool = "p"\n{listener}'
    )


def hold(port: int) -> tuple[socket.socket, str]:
    """A connection through the proxy, left open, and the name its server sent ("" if the
    proxy closed it)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    data = b""
    try:
        while not data.endswith(b"\n"):
            chunk = s.recv(100)
            if not chunk:
                break
            data += chunk
    except OSError:  # reset: refused at accept
        pass
    return s, data.decode().strip()


def both_workers_accepted(admin: int) -> bool:
    workers = status(admin)["workers"]
    return len(workers) == 2 and all(w["total"] > 0 for w in workers)


def test_least_conn_balances_held_connections_over_the_instance(proxy, backends):
    """Each connection goes to a least loaded server of the whole instance, so the spread is
    at most one at every step, as in one process. Per worker, two workers that each see a
    server idle both pick it (the first two connections alone make a spread of 2 half the
    time). The figure in docs/WORKERS.md is this test's (run with -s)."""
    servers = backends("a", "b", "c")
    port, admin = free_port(), free_port()
    p = start(proxy, head(port, admin) + pool_toml("p", servers, balance='"least_conn"'))
    held, counts = [], dict.fromkeys("abc", 0)
    try:
        for _ in range(60):
            sock, name = hold(port)
            held.append(sock)
            counts[name] += 1
            assert max(counts.values()) - min(counts.values()) <= 1, counts
        assert counts == {"a": 20, "b": 20, "c": 20}
        assert [len(s.conns) for s in servers] == [20, 20, 20]  # at the servers
        assert wait_until(lambda: status(admin)["listeners"][0]["total"] == 60, 10)
        assert wait_until(lambda: both_workers_accepted(admin), 10)
        per_worker = [w["servers"]["p"] for w in status(admin)["workers"]]
        print(f"\n60 held, least_conn, workers=2: {counts}; per worker: {per_worker}")
    finally:
        for sock in held:
            sock.close()
    assert p.stop() == 0


def test_max_connections_of_a_server_holds_across_workers(proxy, backends):
    (a,) = backends("a")
    port, admin = free_port(), free_port()
    server = f'name = "a"\naddress = "{a.address}"\nmax_connections = 3'
    start(proxy, head(port, admin) + pool_toml("p", [server], retries=0))
    held = [hold(port) for _ in range(12)]
    try:
        names = [name for _, name in held]
        assert names.count("a") == 3, names  # not 3 per worker
        assert len(a.conns) == 3
        assert wait_until(lambda: both_workers_accepted(admin), 10)
        held[0][0].close()  # one leaves: one more may come, through either worker
        assert wait_until(lambda: len(a.conns) == 2, 10)
        more = [hold(port) for _ in range(4)]
        held += more
        assert [name for _, name in more].count("a") == 1
    finally:
        for sock, _ in held:
            sock.close()


def test_health_checks_run_once_per_instance(proxy, backends):
    """With an interval of an hour each checker probes once, soon after it starts: one
    probe at the server for the instance, not one per worker."""
    a, b = backends("a", "b")
    port, admin = free_port(), free_port()
    health = {"type": '"tcp"', "interval": '"1h"', "timeout": '"1s"'}
    start(proxy, head(port, admin) + pool_toml("p", [a, b], health=health))
    assert wait_until(lambda: a.accepted == 1 and b.accepted == 1, 10)
    assert not wait_until(lambda: a.accepted > 1 or b.accepted > 1, 2.5)


def test_a_server_going_down_is_seen_down_by_every_worker(proxy, backends):
    a, b = backends("a", "b")
    port, admin = free_port(), free_port()
    health = {"type": '"tcp"', "interval": '"200ms"', "timeout": '"200ms"', "fall": 1, "rise": 1}
    p = start(
        proxy, head(port, admin) + pool_toml("p", [a, b], health=health, passive={"max_fails": 0})
    )
    b.stop()
    assert p.wait_log(r"worker 0: server p/b is DOWN", 10), p.log()
    assert wait_until(lambda: all(w["down"] == ["p/b"] for w in status(admin)["workers"]), 5)
    names = [hold(port) for _ in range(30)]
    try:
        assert {name for _, name in names} == {"a"}
        assert wait_until(lambda: both_workers_accepted(admin), 10)
        (pool,) = status(admin)["pools"]
        assert {s["name"]: s["connect_failures"] for s in pool["servers"]}["b"] == 0
    finally:
        for sock, _ in names:
            sock.close()
    assert "worker 1: server p/b is DOWN" not in p.log()  # worker 1 checks nothing
    b.start()  # the same port again
    assert wait_until(lambda: all(w["down"] == [] for w in status(admin)["workers"]), 10)


def test_per_client_connection_limit_holds_across_workers(proxy, backends):
    (a,) = backends("a")
    port, admin = free_port(), free_port()
    access = "[listener.l.access]\nmax_per_client = 2\n"
    start(proxy, head(port, admin, access) + pool_toml("p", [a]))
    held = [hold(port) for _ in range(12)]
    try:
        assert [name for _, name in held].count("a") == 2  # not 2 per worker
        assert wait_until(lambda: status(admin)["listeners"][0]["limited"] == 10, 10)
    finally:
        for sock, _ in held:
            sock.close()
    assert wait_until(lambda: len(a.conns) == 0, 10)
    again = [hold(port) for _ in range(3)]  # the counts went down with the connections
    assert [name for _, name in again].count("a") == 2
    for sock, _ in again:
        sock.close()


def test_per_client_connection_rate_holds_across_workers(proxy, backends):
    (a,) = backends("a")
    port, admin = free_port(), free_port()
    access = "[listener.l.access]\nrate_per_client = 1\nrate_burst = 4\n"
    start(proxy, head(port, admin, access) + pool_toml("p", [a]))
    began = time.monotonic()
    names = []
    for _ in range(16):
        sock, name = hold(port)
        sock.close()
        names.append(name)
    elapsed = time.monotonic() - began
    admitted = names.count("a")
    # A burst of 4 for the instance, plus one per second of the run (per worker: 8 or more).
    assert 4 <= admitted <= 4 + math.ceil(elapsed), (admitted, elapsed)


def http_get(port: int, path: str) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1])


def test_route_rate_limit_is_one_budget_for_the_instance(proxy, http_backends):
    (a,) = http_backends("a")
    port, admin = free_port(), free_port()
    listener = (
        'protocol = "http"\n[[listener.l.routes]]\nname = "api"\npool = "p"\n'
        'rate_limits = [{name = "c", rate = 1, per = "1m", burst = 5}]\n'
    )
    server = f'name = "a"\naddress = "{a.address}"'
    start(proxy, head(port, admin, listener) + pool_toml("p", [server]))
    codes = [http_get(port, "/x") for _ in range(16)]  # a connection each: both workers
    assert codes.count(200) == 5, codes  # five for the instance, not five per worker
    assert codes.count(429) == 11
    assert wait_until(lambda: both_workers_accepted(admin), 10)


def test_a_restarted_worker_attaches_and_counts_start_afresh(proxy, backends):
    """Killing a worker cuts its connections: its counts go with it, and the restarted
    worker shares the others' state again."""
    (a,) = backends("a")
    port, admin = free_port(), free_port()
    server = f'name = "a"\naddress = "{a.address}"\nmax_connections = 4'
    p = start(proxy, head(port, admin) + pool_toml("p", [server], retries=0))
    held = [hold(port) for _ in range(12)]
    try:
        assert [name for _, name in held].count("a") == 4

        def on_a() -> list[int]:
            return [w["servers"].get("p", {}).get("a", 0) for w in status(admin)["workers"]]

        assert wait_until(lambda: sum(on_a()) == 4, 10)
        index = next(i for i, n in enumerate(on_a()) if n > 0)
        victim = status(admin)["workers"][index]
        old = victim["pid"]
        os.kill(old, signal.SIGKILL)
        assert p.wait_log(rf"worker {index} \(pid {old}\) was killed by SIGKILL", 10)

        def restarted() -> bool:
            w = status(admin)["workers"][index]
            return w["alive"] and w["pid"] != old and w["report_ago"] is not None

        assert wait_until(restarted, 20)
        left = 4 - victim["servers"]["p"]["a"]  # connections the other worker still holds
        assert wait_until(lambda: len(a.conns) == left, 10)
        more = [hold(port) for _ in range(12)]
        held += more
        assert [name for _, name in more].count("a") == 4 - left  # room again, no more
        assert len(a.conns) == 4
    finally:
        for sock, _ in held:
            sock.close()


def test_a_reload_keeps_the_counts_of_kept_servers_and_adds_new_ones_in_every_worker(
    proxy, backends
):
    """Slots go by name: after a reload that removes b and adds c, both workers count a's
    open connections and find c empty, so new connections go to c until it catches up."""
    a, b, c = backends("a", "b", "c")
    port, admin = free_port(), free_port()
    p = start(proxy, head(port, admin) + pool_toml("p", [a, b], balance='"least_conn"'))
    held = [hold(port) for _ in range(6)]
    try:
        assert sorted(name for _, name in held) == ["a"] * 3 + ["b"] * 3
        p.path.write_text(head(port, admin) + pool_toml("p", [a, c], balance='"least_conn"'))
        p.proc.send_signal(signal.SIGHUP)
        applied = r"worker \d: reload 1 applied"
        assert wait_until(lambda: len(re.findall(applied, p.log())) == 2, 20), p.log()
        more = [hold(port) for _ in range(5)]
        held += more
        names = [name for _, name in more]
        assert names[:3] == ["c"] * 3, names  # c had none, a still has 3
        assert sorted(names[3:]) == ["a", "c"]
        assert [len(s.conns) for s in (a, b, c)] == [4, 3, 4]  # b's drain on
    finally:
        for sock, _ in held:
            sock.close()
