"""The L4 data path end to end: real l4lb process, real backends, real sockets."""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import socket
import threading
import time

import pytest

from tests.e2e.helpers import free_port, name_of, pool_toml, wait_until


def srv(backend, *extra: str) -> str:
    """A server table body for `pool_toml`, with extra `key = value` lines."""
    return "\n".join([f'name = "{backend.name}"', f'address = "{backend.address}"', *extra])


def listener_toml(port: int, pool: str = "p", extra: str = "", host: str = "127.0.0.1") -> str:
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return f'[listener.l]\nbind = "{bind}"\npool = "{pool}"\n{extra}\n'


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_bytes_survive_both_ways(proxy, backends, loop):
    (b,) = backends("b1")
    port = free_port()
    proxy(listener_toml(port) + pool_toml("p", [b]), loop=loop)
    payload = os.urandom(8 << 20)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        got = bytearray()

        def reader() -> None:
            while True:
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                got.extend(chunk)

        t = threading.Thread(target=reader)
        t.start()
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        t.join(20)
    assert bytes(got[:3]) == b"b1\n"
    assert hashlib.sha256(got[3:]).hexdigest() == hashlib.sha256(payload).hexdigest()


def test_half_close_still_gets_whole_response(proxy, backends):
    (b,) = backends("d", mode="digest")
    port = free_port()
    p = proxy(listener_toml(port) + pool_toml("p", [b]))
    payload = os.urandom(3 << 20)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        got = bytearray()
        while chunk := s.recv(1 << 20):
            got.extend(chunk)
    digest, _, rest = bytes(got).partition(b"\n")
    assert digest.decode() == hashlib.sha256(payload).hexdigest()
    assert rest == b"x" * (1 << 20)
    assert p.wait_log(r"end=client_close")


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_response_after_server_hung_up_while_client_was_slow(proxy, loop):
    """The server sends its whole response and closes while l4lb cannot write to the slow
    client (and has passed the client's EOF on): the server's socket is then shut both ways
    (EPOLLHUP) with bytes still unread. They must all reach the client once it reads."""
    size = 4 << 20
    lsock = socket.create_server(("127.0.0.1", 0))
    lsock.settimeout(10)

    def server() -> None:
        conn, _ = lsock.accept()
        with conn:
            while conn.recv(65536):
                pass
            conn.sendall(b"y" * size)

    t = threading.Thread(target=server, daemon=True)
    t.start()
    port = free_port()
    backend = f"127.0.0.1:{lsock.getsockname()[1]}"
    p = proxy(
        listener_toml(port) + f'[pool.p]\n[[pool.p.servers]]\naddress = "{backend}"\n',
        loop=loop,
    )
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(10)
        s.connect(("127.0.0.1", port))
        s.sendall(b"request")
        s.shutdown(socket.SHUT_WR)
        t.join(10)  # the server has sent everything and closed
        time.sleep(0.5)  # let its FIN reach l4lb before the client reads
        got = 0
        while chunk := s.recv(1 << 20):
            got += len(chunk)
    lsock.close()
    assert got == size
    assert p.wait_log(r"end=client_close")


def test_ipv6_listener(proxy, backends):
    (b,) = backends("six")
    port = free_port("::1")
    proxy(listener_toml(port, host="::1") + pool_toml("p", [b]))
    assert name_of(port, host="::1") == "six"


def test_round_robin_spreads(proxy, backends):
    bs = backends("a", "b", "c")
    port = free_port()
    proxy(listener_toml(port) + pool_toml("p", bs))
    names = [name_of(port) for _ in range(9)]
    assert sorted(names) == sorted(["a", "b", "c"] * 3)


def test_weighted_round_robin_follows_weights(proxy, backends):
    a, b = backends("a", "b")
    port = free_port()
    servers = [
        f'name = "a"\naddress = "{a.address}"\nweight = 3',
        f'name = "b"\naddress = "{b.address}"',
    ]
    proxy(listener_toml(port) + pool_toml("p", servers, balance='"weighted_round_robin"'))
    names = [name_of(port) for _ in range(8)]
    assert names.count("a") == 6 and names.count("b") == 2


def test_active_check_takes_a_dead_server_out(proxy, backends):
    """With retries and passive detection off, only the active check can save clients."""
    a, b, c = backends("a", "b", "c")
    port = free_port()
    health = {"type": '"tcp"', "interval": '"200ms"', "timeout": '"100ms"', "fall": 2, "rise": 1}
    p = proxy(
        listener_toml(port)
        + pool_toml("p", [a, b, c], retries=0, health=health, passive={"max_fails": 0})
    )
    assert {name_of(port) for _ in range(6)} == {"a", "b", "c"}
    b.stop()
    # interval * fall = 0.4s; allow scheduling slack on a loaded 2-core machine.
    assert p.wait_log(r"server p/b is DOWN", timeout=3)
    names = [name_of(port) for _ in range(30)]
    assert "b" not in names and len(names) == 30
    b.start()
    assert p.wait_log(r"server p/b is UP", timeout=3)
    assert "b" in {name_of(port) for _ in range(6)}


def test_refused_connect_retries_another_server(proxy, backends):
    a, c = backends("a", "c")
    dead = free_port()  # nothing listens here
    port = free_port()
    servers = [
        f'name = "a"\naddress = "{a.address}"',
        f'name = "dead"\naddress = "127.0.0.1:{dead}"',
        f'name = "c"\naddress = "{c.address}"',
    ]
    p = proxy(listener_toml(port) + pool_toml("p", servers, retries=2))
    names = [name_of(port) for _ in range(20)]
    assert set(names) == {"a", "c"}
    assert p.wait_log(r"server p/dead ejected for 10s after refused")
    assert p.wait_log(r"retries=1")


def test_every_server_refusing_closes_the_client(proxy):
    port = free_port()
    dead1, dead2 = free_port(), free_port()
    p = proxy(
        listener_toml(port)
        + pool_toml(
            "p", [f'address = "127.0.0.1:{dead1}"', f'address = "127.0.0.1:{dead2}"'], retries=1
        )
    )
    assert name_of(port) == ""
    assert p.wait_log(r"end=refused retries=1")
    assert name_of(port) == ""  # both ejected now: nothing to try
    assert p.wait_log(r"end=no_server")


def test_backup_only_when_no_primary(proxy, backends):
    a, bk = backends("primary", "backup")
    port = free_port()
    servers = [
        f'name = "primary"\naddress = "{a.address}"',
        f'name = "backup"\naddress = "{bk.address}"\nbackup = true',
    ]
    proxy(listener_toml(port) + pool_toml("p", servers))
    assert {name_of(port) for _ in range(5)} == {"primary"}
    a.stop()
    assert {name_of(port) for _ in range(5)} == {"backup"}  # passive ejection + retry


def test_drained_server_gets_no_new_connections(proxy, backends):
    a, b = backends("a", "b")
    port = free_port()
    servers = [f'name = "a"\naddress = "{a.address}"', f'name = "b"\naddress = "{b.address}"']
    p = proxy(listener_toml(port) + pool_toml("p", servers))
    # A long-lived connection on each server.
    held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
    firsts = sorted(s.recv(10).decode().strip() for s in held)
    assert firsts == ["a", "b"]
    drained = [*servers[:1], servers[1] + "\ndrain = true"]
    assert p.reload(listener_toml(port) + pool_toml("p", drained))
    assert {name_of(port) for _ in range(6)} == {"a"}
    for s in held:  # both established connections still work
        s.sendall(b"still here\n")
        assert s.recv(100) == b"still here\n"
        s.close()


def test_least_conn_prefers_the_idle_server(proxy, backends):
    a, b = backends("a", "b")
    port = free_port()
    p = proxy(listener_toml(port) + pool_toml("p", [a, b], balance='"least_conn"'))
    busy = socket.create_connection(("127.0.0.1", port), timeout=5)
    first = busy.recv(10).decode().strip()
    other = "b" if first == "a" else "a"
    for i in range(5):
        assert name_of(port) == other
        # The next pick must see this connection closed: wait for its log line.
        assert wait_until(lambda i=i: len(p.access_lines()) == i + 1)
    busy.close()


def test_hash_keeps_each_client_on_its_server(proxy, backends):
    bs = backends("a", "b", "c")
    port = free_port()
    proxy(listener_toml(port, host="0.0.0.0") + pool_toml("p", bs, balance='"hash"'))
    sources = [f"127.0.0.{i}" for i in range(2, 22)]
    first = {src: name_of(port, source=src) for src in sources}
    again = {src: name_of(port, source=src) for src in sources}
    assert first == again
    assert len(set(first.values())) >= 2


def test_server_connection_limit(proxy, backends):
    a, b = backends("a", "b")
    port = free_port()
    servers = [
        f'name = "a"\naddress = "{a.address}"\nmax_connections = 1',
        f'name = "b"\naddress = "{b.address}"\nweight = 1',
    ]
    proxy(listener_toml(port) + pool_toml("p", servers, balance='"least_conn"'))
    held = socket.create_connection(("127.0.0.1", port), timeout=5)
    # least_conn with ties rotating: make sure the held connection is the one on "a".
    while held.recv(10) != b"a\n":
        held.close()
        held = socket.create_connection(("127.0.0.1", port), timeout=5)
    # Even with "b" busy too, "a" (full) is never chosen.
    also = socket.create_connection(("127.0.0.1", port), timeout=5)
    assert also.recv(10) == b"b\n"
    assert name_of(port) == "b"
    also.close()
    held.close()


def test_listener_connection_limit_queues_the_next_client(proxy, backends):
    (a,) = backends("a")
    port = free_port()
    proxy(listener_toml(port, extra="max_connections = 1") + pool_toml("p", [a]))
    first = socket.create_connection(("127.0.0.1", port), timeout=5)
    assert first.recv(10) == b"a\n"
    second = socket.create_connection(("127.0.0.1", port), timeout=5)
    second.settimeout(0.5)
    with pytest.raises(TimeoutError):
        second.recv(10)  # accepted by the kernel, not yet by l4lb
    first.close()
    second.settimeout(5)
    assert second.recv(10) == b"a\n"
    second.close()


def test_idle_timeout_closes_quiet_connections(proxy, backends):
    (a,) = backends("a")
    port = free_port()
    p = proxy(listener_toml(port, extra='idle_timeout = "1s"') + pool_toml("p", [a]))
    with socket.create_connection(("127.0.0.1", port), timeout=6) as s:
        assert s.recv(10) == b"a\n"
        assert s.recv(10) == b""  # closed by l4lb after ~1-2s of silence
    assert p.wait_log(r"end=idle_timeout")


def test_reload_changes_pool_while_a_stream_keeps_flowing(proxy, backends):
    old, new = backends("old", "new")
    port = free_port()
    p = proxy(listener_toml(port) + pool_toml("p", [old]))
    stream = socket.create_connection(("127.0.0.1", port), timeout=5)
    assert stream.recv(10) == b"old\n"
    assert p.reload(listener_toml(port) + pool_toml("p", [new]))
    assert {name_of(port) for _ in range(4)} == {"new"}
    for i in range(20):
        msg = f"chunk {i}\n".encode() * 100
        stream.sendall(msg)
        got = b""
        while len(got) < len(msg):
            got += stream.recv(65536)
        assert got == msg
    stream.close()


def test_bad_reload_keeps_the_old_config(proxy, backends):
    (a,) = backends("a")
    port = free_port()
    p = proxy(listener_toml(port) + pool_toml("p", [a]))
    assert not p.reload(listener_toml(port) + pool_toml("p", [a], balance='"fastest"'))
    assert "unknown algorithm 'fastest'" in p.log()
    assert name_of(port) == "a"


def test_reload_adds_and_removes_listeners(proxy, backends):
    (a,) = backends("a")
    port1, port2 = free_port(), free_port()
    p = proxy(listener_toml(port1) + pool_toml("p", [a]))
    two = (
        listener_toml(port1)
        + f'[listener.m]\nbind = "127.0.0.1:{port2}"\npool = "p"\n'
        + pool_toml("p", [a])
    )
    assert p.reload(two)
    assert name_of(port2) == "a"
    held = socket.create_connection(("127.0.0.1", port2), timeout=5)
    assert held.recv(10) == b"a\n"
    assert p.reload(listener_toml(port1) + pool_toml("p", [a]))
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port2), timeout=5)
    held.sendall(b"ok\n")  # the removed listener's connection is drained, not cut
    assert held.recv(10) == b"ok\n"
    held.close()
    assert name_of(port1) == "a"


def test_sigterm_lets_connections_finish(proxy, backends):
    (a,) = backends("a")
    port = free_port()
    p = proxy('[global]\ndrain_timeout = "10s"\n' + listener_toml(port) + pool_toml("p", [a]))
    held = socket.create_connection(("127.0.0.1", port), timeout=5)
    assert held.recv(10) == b"a\n"
    p.proc.send_signal(15)
    assert p.wait_log("draining 1 connection")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)
    held.sendall(b"bye\n")
    assert held.recv(10) == b"bye\n"
    held.close()
    assert p.proc.wait(10) == 0


def test_sigterm_drain_deadline_closes_the_rest(proxy, backends):
    (a,) = backends("a")
    port = free_port()
    p = proxy('[global]\ndrain_timeout = "300ms"\n' + listener_toml(port) + pool_toml("p", [a]))
    held = socket.create_connection(("127.0.0.1", port), timeout=5)
    assert held.recv(10) == b"a\n"
    assert p.stop() == 0
    assert held.recv(10) == b""
    assert "drain deadline reached" in p.log()


def test_access_log_line_per_connection_json(proxy, backends):
    (a,) = backends("a")
    port = free_port()
    p = proxy(listener_toml(port) + pool_toml("p", [a]), args=("--log-format", "json"))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.recv(10)
        s.sendall(b"12345")
        s.recv(10)
    import json

    assert wait_until(lambda: any('"connection"' in line for line in p.access_lines()))
    record = json.loads(next(line for line in p.access_lines() if '"connection"' in line))
    assert record["listener"] == "l" and record["pool"] == "p" and record["server"] == "a"
    assert record["bytes_in"] == 5 and record["bytes_out"] == 7
    assert record["end"] == "client_close"
    assert record["client"].startswith("127.0.0.1:")


def test_connect_timeout_moves_on_to_another_server(proxy, backends):
    """A server whose accept queue is full drops SYNs: the connect hangs until the timeout."""
    (good,) = backends("good")
    stuck = socket.socket()
    stuck.bind(("127.0.0.1", 0))
    stuck.listen(0)
    fillers = []
    for _ in range(4):  # fill the accept queue; later SYNs are dropped
        f = socket.socket()
        f.setblocking(False)
        f.connect_ex(stuck.getsockname())
        fillers.append(f)
    try:
        port = free_port()
        servers = [f'name = "stuck"\naddress = "127.0.0.1:{stuck.getsockname()[1]}"', srv(good)]
        p = proxy(listener_toml(port) + pool_toml("p", servers, connect_timeout='"300ms"'))
        assert {name_of(port) for _ in range(4)} == {"good"}
        assert p.wait_log(r"server p/stuck ejected for 10s after connect_timeout")
    finally:
        for f in fillers:
            f.close()
        stuck.close()


def test_a_server_reset_mid_write_leaves_no_stale_registration(proxy, backends):
    """Regression: closing after a failed write (bytes still in the pipe) once left the source's
    reader registered on the closed fd; the next socket to get that fd number was never read."""
    (echo,) = backends("echo")
    resetter = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = resetter.accept()
            except OSError:
                return
            conn.recv(1024)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            conn.close()  # RST while l4lb is still writing

    threading.Thread(target=serve, daemon=True).start()
    port, other = free_port(), free_port()
    proxy(
        listener_toml(port, pool="r")
        + pool_toml("r", [f'address = "127.0.0.1:{resetter.getsockname()[1]}"'])
        + f'[listener.e]\nbind = "127.0.0.1:{other}"\npool = "e"\n'
        + pool_toml("e", [echo])
    )
    try:
        for _ in range(15):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                try:
                    for _ in range(64):
                        s.sendall(b"x" * 65536)
                except OSError:
                    pass
            with socket.create_connection(("127.0.0.1", other), timeout=5) as s:
                assert s.recv(10) == b"echo\n"
                s.sendall(b"ping")
                assert s.recv(10) == b"ping"
    finally:
        resetter.close()


def _limit_free_descriptors(pid: int, free: int) -> None:
    """Lower l4lb's RLIMIT_NOFILE so that exactly `free` more descriptors can be opened (the
    limit bounds descriptor numbers, and the kernel hands out the lowest free one first)."""
    used = {int(fd) for fd in os.listdir(f"/proc/{pid}/fd")}
    holes = [n for n in range(max(used) + free + 2) if n not in used]
    _, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (holes[free], hard))


def _server_active(admin: int) -> int:
    with socket.create_connection(("127.0.0.1", admin), timeout=5) as s:
        s.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    snap = json.loads(data.split(b"\r\n\r\n", 1)[1])
    return sum(s["active"] for p in snap["pools"] for s in p["servers"])


def _closed_at_once(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        try:
            return s.recv(100) == b""
        except ConnectionResetError:
            return True


def test_out_of_descriptors_ends_the_session_and_gives_the_server_back(proxy, backends):
    """Issue 17: under EMFILE, `socket.socket()` (for the server) and `os.pipe2` (for the
    relay) used to raise out of a loop callback with the server's count taken. With a real
    low RLIMIT_NOFILE on the l4lb process, each ends its session (`end=emfile`) and the
    proxy goes on once descriptors are free again."""
    (b,) = backends("b")
    port, admin = free_port(), free_port()
    config = f'[admin]\nbind = "127.0.0.1:{admin}"\n' + listener_toml(port) + pool_toml("p", [b])
    p = proxy(config, loop="uvloop")
    pid = p.proc.pid
    _, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    try:
        # Room for the client and the server socket, none for the relay's pipe.
        _limit_free_descriptors(pid, 2)
        assert _closed_at_once(port)
        assert p.wait_log(r"end=emfile")
        # Room for the client only: the socket for the server cannot be made.
        _limit_free_descriptors(pid, 1)
        assert _closed_at_once(port)
        assert p.wait_log(r"cannot open a socket to server p/b")
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (hard, hard))
    assert name_of(port) == "b"
    assert wait_until(lambda: _server_active(admin) == 0)
    assert len(re.findall(r"end=emfile", p.log())) == 2, p.log()[-3000:]
    assert "Traceback" not in p.log() and p.proc.poll() is None
