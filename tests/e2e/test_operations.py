"""Operator features as HAProxy and nginx users expect them, run as real processes: `${VAR}`
and includes (check, start, reload, workers), privilege drop, log reopen on SIGUSR1, syslog,
access-log formats."""

from __future__ import annotations

import subprocess
import sys

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
    assert wait_until(lambda: name_of(port) == "b")
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
