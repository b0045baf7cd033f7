"""Operator features as HAProxy and nginx users expect them, run as real processes: `${VAR}`
and includes (check, start, reload, workers), privilege drop, log reopen on SIGUSR1, syslog,
access-log formats."""

from __future__ import annotations

import os
import pwd
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.helpers import free_port, name_of, pool_toml, wait_until


def listener(port_var: str = "L4LB_T_PORT") -> str:
    return f'[listener.l]\nbind = "127.0.0.1:${{{port_var}}}"\npool = "p"\n'


@pytest.mark.parametrize("workers", [1, 2])
def test_env_and_includes_at_start_and_reload(proxy, backends, tmp_path, workers):
    a, b = backends("a", "b")
    port = free_port()
    (tmp_path / "conf.d").mkdir()
    pool = tmp_path / "conf.d" / "pool.toml"
    pool.write_text(pool_toml("p", [a]))
    main = f'include = ["conf.d"]\n[global]\nworkers = {workers}\n' + listener()
    p = proxy(main, env={"L4LB_T_PORT": str(port)})
    assert {name_of(port) for _ in range(3)} == {"a"}

    pool.write_text(pool_toml("p", [b]))
    p.path.write_text(main)
    assert p.reload(main)
    assert wait_until(lambda: p.log().count("reload 1 applied") == workers), p.log()
    assert {name_of(port) for _ in range(4)} == {"b"}
    assert p.stop() == 0


def test_check_follows_includes_and_names_the_file(tmp_path):
    (tmp_path / "site.toml").write_text('include = "pools/*.toml"\n' + listener())
    (tmp_path / "pools").mkdir()
    (tmp_path / "pools" / "p.toml").write_text('[pool.p]\nservers = ["127.0.0.1:1"]\nweight = 2\n')

    def check(env: dict[str, str]) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "l4lb", "check", str(tmp_path / "site.toml")],
            capture_output=True,
            text=True,
            env={"PATH": "/usr/bin:/bin", **env},
            timeout=60,
        )

    done = check({})
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert any(
        line.startswith(f"{tmp_path}/site.toml:3: listener.l.bind: the environment variable")
        for line in lines
    ), done.stderr
    done = check({"L4LB_T_PORT": "8080"})
    assert done.returncode == 1
    assert done.stderr.startswith(f"{tmp_path}/pools/p.toml:3: pool.p.weight: unknown key"), (
        done.stderr
    )
    (tmp_path / "pools" / "p.toml").write_text('[pool.p]\nservers = ["127.0.0.1:1"]\n')
    done = check({"L4LB_T_PORT": "8080"})
    assert done.returncode == 0, done.stderr
    assert "OK (1 listener(s), 1 pool(s), 1 server(s))" in done.stdout


def lines_of(path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.parametrize("workers", [1, 2])
def test_sigusr1_reopens_the_access_log_after_a_rename(proxy, backends, tmp_path, workers):
    (a,) = backends("a")
    port = free_port()
    p = proxy(
        f'[global]\nworkers = {workers}\naccess_log = "access.log"\n'
        f'[listener.l]\nbind = "127.0.0.1:{port}"\npool = "p"\n' + pool_toml("p", [a])
    )
    log, rotated = tmp_path / "access.log", tmp_path / "access.log.1"
    if workers > 1:
        assert p.wait_log(r"all 2 workers serving")  # signals go to serving workers
    assert name_of(port) == "a"
    assert wait_until(lambda: len(lines_of(log)) == 1), p.log()
    log.rename(rotated)
    assert name_of(port) == "a"
    assert wait_until(lambda: len(lines_of(rotated)) == 2)  # the old file, until signalled
    p.proc.send_signal(signal.SIGUSR1)
    assert wait_until(
        lambda: p.log().count("SIGUSR1: log files reopened") >= 1 + (workers > 1) * workers
    ), p.log()
    assert log.exists()
    for _ in range(3):
        assert name_of(port) == "a"
    assert wait_until(lambda: len(lines_of(log)) == 3), p.log()
    assert len(lines_of(rotated)) == 2
    assert all(" l p/a in=0 out=2 " in line for line in lines_of(log))
    assert p.proc.poll() is None
    assert p.stop() == 0


def test_syslog_over_udp(backends, tmp_path):
    (a,) = backends("a")
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        udp.settimeout(10)
        (tmp_path / "site.toml").write_text(
            f'[global]\nworkers = 1\nlog = "syslog:127.0.0.1:{udp.getsockname()[1]}"\n'
            'log_facility = "local0"\n'
            f'[listener.l]\nbind = "127.0.0.1:{port}"\npool = "p"\n' + pool_toml("p", [a])
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "l4lb", "up", str(tmp_path / "site.toml"), "--no-tui"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            got: list[str] = []

            def until(pattern: str) -> str:
                for _ in range(50):
                    got.append(udp.recv(65536).decode())
                    if re.search(pattern, got[-1]):
                        return got[-1]
                raise AssertionError(got)

            pid = proc.pid
            # local0 (16) * 8 + info (6) = <134>, RFC 3164 tag l4lb[PID]:
            assert until(r"listener l:").startswith(f"<134>l4lb[{pid}]: INFO listener l: tcp on")
            assert name_of(port) == "a"
            line = until(r" l p/a in=")
            assert re.match(rf"<134>l4lb\[{pid}\]: \S+Z 127\.0\.0\.1:\d+ l p/a in=0 out=2 ", line)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(15) == 0
            out, err = proc.communicate()
            assert b"listener l" not in err and out == b""  # nothing went to the terminal
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_access_log_format_on_http(proxy, http_backends):
    (a,) = http_backends("a")
    port = free_port()
    fmt = '$remote_addr "$request" $status $upstream_addr $http_version $request_id'
    p = proxy(
        f"[global]\naccess_log_format = '{fmt}'\n"
        f'[listener.web]\nbind = "127.0.0.1:{port}"\nprotocol = "http"\npool = "p"\n'
        f'[pool.p]\nservers = [{{ name = "a", address = "{a.address}" }}]\n'
    )
    out = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{port}/x?y=1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.stdout == "200", out.stderr
    assert wait_until(lambda: len(p.access_lines()) == 1)
    (line,) = p.access_lines()
    assert re.fullmatch(r'127\.0\.0\.1 "GET /x\?y=1 HTTP/1\.1" 200 p/a 1\.1 \S+', line), line


def children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def uid_of(pid: int) -> tuple[int, ...]:
    status = Path(f"/proc/{pid}/status").read_text()
    (line,) = [ln for ln in status.splitlines() if ln.startswith("Uid:")]
    return tuple(int(x) for x in line.split()[1:])  # real, effective, saved, filesystem


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
@pytest.mark.parametrize("workers", [1, 2])
def test_user_drops_privileges_in_every_serving_process(proxy, backends, workers):
    nobody = pwd.getpwnam("nobody")
    (a,) = backends("a")
    port = free_port()
    p = proxy(
        f'[global]\nworkers = {workers}\nuser = "nobody"\n'
        f'[listener.l]\nbind = "127.0.0.1:{port}"\npool = "p"\n' + pool_toml("p", [a])
    )
    assert p.wait_log(r"running as user nobody"), p.log()
    assert name_of(port) == "a"
    if workers == 1:
        serving = [p.proc.pid]
    else:
        assert wait_until(lambda: p.log().count("running as user nobody") == workers)
        serving = children(p.proc.pid)
        assert len(serving) == workers
        assert uid_of(p.proc.pid)[0] == 0  # the supervisor keeps root to restart workers
    for pid in serving:
        assert uid_of(pid) == (nobody.pw_uid,) * 4
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        groups = next(ln for ln in status if ln.startswith("Gid:"))
        assert groups.split()[1:] == [str(nobody.pw_gid)] * 4
    assert "running as root" not in p.log()
    assert p.stop() == 0
