"""Past one machine (docs/SCALING.md): two l4lb instances behind an ECMP route, sharing a
global rate limit through a redis-server in its own namespace (tests/e2e/scalelab.py draws
the network).

A client sends new connections to one virtual IP; the router spreads them over both
instances by flow hash, as an ECMP or anycast router in front of a fleet does. The test checks
that both instances serve, and that a `scope = "global"` limit of BURST requests holds across
both: BURST answers 200 in all, the rest 429, and each instance refused some (with
`scope = "local"` each instance would allow BURST of its own). Skipped, with the reason, when
not root or when namespaces or redis-server cannot be used. Everything made is removed however
the test ends. A few seconds.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import wait_until
from tests.e2e.netlab import cannot_use
from tests.e2e.redisserver import REDIS_SERVER
from tests.e2e.scalelab import BACKEND, INSTANCES, REDIS, VIP, ScaleLab

PEERS = Path(__file__).with_name("hapeers.py")
L4LB = str(Path(sys.executable).with_name("l4lb"))
PORT, BACKEND_PORT, ADMIN, REDIS_PORT = 8080, 8000, 9900, 6379  # private namespaces only
BURST = 10  # requests the global limit allows (and refills one per 6 minutes: none here)
WAIT = 20.0

CONFIG = f"""\
[global]
workers = 1

[admin]
bind = "127.0.0.1:{ADMIN}"

[redis]
address = "{REDIS}:{REDIS_PORT}"
timeout = "1s"
on_error = "deny"

[listener.vip]
bind = "{VIP}:{PORT}"
protocol = "http"

[[listener.vip.routes]]
name = "limited"
path_prefix = "/limited"
pool = "app"
rate_limits = [{{name = "shared", rate = {BURST}, per = "1h", burst = {BURST}, scope = "global"}}]

[[listener.vip.routes]]
name = "main"
pool = "app"

[[pool.app.servers]]
name = "backend"
address = "{BACKEND}:{BACKEND_PORT}"
"""


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[ScaleLab]:
    reason = cannot_use(REDIS_SERVER) if REDIS_SERVER else "redis-server is not installed"
    if reason:
        pytest.skip(reason.replace("keepalived", "redis-server"))
    lab = ScaleLab(tmp_path)
    try:
        lab.build()
        yield lab
    finally:
        lab.close()


def status(lab: ScaleLab, role: str) -> dict:
    script = f"import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:{ADMIN}/status').read().decode())"
    result = lab.run(role, sys.executable, "-c", script)
    return json.loads(result.stdout) if result.returncode == 0 else {}


def ready(lab: ScaleLab, role: str) -> bool:
    return lab.run(role, L4LB, "ready", "--admin", f"127.0.0.1:{ADMIN}").returncode == 0


def requests(lab: ScaleLab, path: str, count: int) -> list[str]:
    result = lab.run("client", sys.executable, str(PEERS), "http", VIP, str(PORT), path, str(count))
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


@pytest.mark.root
def test_two_instances_behind_ecmp_share_a_global_limit(lab: ScaleLab) -> None:
    lab.spawn(
        "lan", "backend", sys.executable, str(PEERS), "httpbackend", BACKEND, str(BACKEND_PORT)
    )
    lab.spawn(
        "redis",
        "redis",
        *(REDIS_SERVER or "redis-server", "--bind", REDIS, "--port", str(REDIS_PORT)),
        *("--save", "", "--appendonly", "no", "--protected-mode", "no"),
    )
    for role in INSTANCES:
        config = lab.tmp / f"{role}.toml"
        config.write_text(CONFIG)
        lab.spawn(role, f"l4lb-{role}", L4LB, "up", str(config), "--no-tui")
    for role in INSTANCES:
        assert wait_until(lambda r=role: ready(lab, r), WAIT, 0.2), lab.log(f"l4lb-{role}")

    # Both serve: the router spreads new connections over the two instances.
    served = Counter(requests(lab, "/", 20))
    by_instance = {role: served[f"200 {address}"] for role, address in INSTANCES.items()}
    assert all(by_instance.values()) and sum(by_instance.values()) == 20, served

    # One budget for both: BURST answers 200 in all, whichever instance each request reached.
    answers = Counter(line.split()[0] for line in requests(lab, "/limited", 3 * BURST))
    refused = {}
    for role in INSTANCES:
        guards = [g for lst in status(lab, role)["listeners"] for g in lst.get("route_guards", [])]
        limit = next(lim for g in guards if g["route"] == "limited" for lim in g["limits"])
        refused[role] = limit["rejected"]
    print(f"\n/ served by {by_instance}; /limited: {dict(answers)}, 429 by {refused}")
    assert answers == {"200": BURST, "429": 2 * BURST}, answers
    assert all(refused.values()), refused
