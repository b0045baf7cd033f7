"""No single point of failure: two l4lb instances share a virtual IP through keepalived (VRRP),
in network namespaces on this machine (tests/e2e/netlab.py draws the network).

Each proxy namespace runs `l4lb up` listening on the virtual IP (ip_nonlocal_bind) and
keepalived with the shipped contrib/keepalived/ configs, where only what is machine-specific is
replaced (interface, address, the l4lb path, the script user). A client sends short
connections to the virtual IP the whole time, and the test

1. kills -9 the master's l4lb: its track script (`l4lb ready`) fails, the address moves to
   the backup, and connections succeed again through the backup;
2. starts that l4lb again: the master is ready again and, with the shipped `preempt`, takes
   the address back;
3. stops the master's keepalived (SIGTERM, what `systemctl stop` sends): it gives the address
   up at once and the backup takes it.

A second test runs docs/HA.md's planned switchover (the VIP also on each proxy's `lo`, the
shipped sysctl file, contrib/keepalived/l4lb-switchover, then back) and asserts that not one
connection failed.

Each phase reports how many connections failed and how long the client went without a
successful connection (visible with `pytest -s`); the assertions are only that the address
moves and that connections succeed again, each wait bounded. Skipped, with the reason, when
not root or when namespaces or keepalived cannot be used. Everything made is removed however
the test ends. About 15 seconds each.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import wait_until
from tests.e2e.netlab import ADDRESSES, BACKEND, NET, Lab, cannot_use

CONTRIB = Path(__file__).parents[2] / "contrib" / "keepalived"
PEERS = Path(__file__).with_name("hapeers.py")
L4LB = str(Path(sys.executable).with_name("l4lb"))
KEEPALIVED = shutil.which("keepalived") or shutil.which("/usr/sbin/keepalived")
VIP = f"{NET}.100"
PORT, BACKEND_PORT, ADMIN = 8080, 8000, 9900  # inside private namespaces: no one else there
WAIT = 20.0  # seconds any one step may take before the test fails
GRACE = 10  # connections through the new holder after the old one's l4lb stopped

CONFIG = f"""\
[global]
workers = 1
drain_timeout = "1s"

[admin]
bind = "127.0.0.1:{ADMIN}"

[listener.vip]
bind = "{VIP}:{PORT}"
pool = "app"

[pool.app]
connect_timeout = "1s"

[pool.app.health]
type = "tcp"
interval = "200ms"
timeout = "200ms"
rise = 1
fall = 1

[[pool.app.servers]]
name = "backend"
address = "{BACKEND}:{BACKEND_PORT}"
"""


def keepalived_conf(name: str) -> str:
    """A shipped config with only the machine-specific parts replaced (each must be there)."""
    text = (CONTRIB / f"keepalived-{name}.conf").read_text()
    for old, new in (
        ("/usr/local/bin/l4lb", L4LB),
        ("192.0.2.100/24", f"{VIP}/24"),
        ("script_user l4lb", "script_user root"),  # no l4lb user here; root owns the venv
    ):
        assert old in text, f"contrib/keepalived/keepalived-{name}.conf lost {old!r}"
        text = text.replace(old, new)
    return text


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    reason = cannot_use(KEEPALIVED)
    if reason:
        pytest.skip(reason)
    lab = Lab(tmp_path)
    try:
        lab.build()
        yield lab
    finally:
        lab.close()


class Instance:
    """l4lb and keepalived in one proxy namespace."""

    def __init__(self, lab: Lab, role: str, keepalived: str) -> None:
        self.lab, self.role = lab, role
        self.config = lab.tmp / f"{role}.toml"
        self.config.write_text(CONFIG)
        self.keepalived_conf = lab.tmp / f"keepalived-{role}.conf"
        self.keepalived_conf.write_text(keepalived_conf(keepalived))
        self.l4lb: subprocess.Popen[bytes] | None = None
        self.keepalived: subprocess.Popen[bytes] | None = None

    def start_l4lb(self) -> None:
        self.l4lb = self.lab.spawn(self.role, f"l4lb-{self.role}", L4LB, "up", str(self.config))

    def ready(self) -> bool:
        return (
            self.lab.run(self.role, L4LB, "ready", "--admin", f"127.0.0.1:{ADMIN}").returncode == 0
        )

    def start_keepalived(self) -> None:
        pid = self.lab.tmp / f"keepalived-{self.role}"
        self.keepalived = self.lab.spawn(
            self.role,
            f"keepalived-{self.role}",
            *(KEEPALIVED or "keepalived", "--dont-fork", "--log-console", "--log-detail"),
            *("--vrrp", "--use-file", str(self.keepalived_conf)),
            *("--pid", f"{pid}.pid", "--vrrp_pid", f"{pid}-vrrp.pid"),
        )


class Client:
    """The client loop in the client namespace, and what it saw."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        lab.spawn("client", "client", sys.executable, str(PEERS), "client", VIP, str(PORT), "60")

    def attempts(self) -> list[tuple[float, bool, str]]:
        out = []
        for line in self.lab.log("client").splitlines():
            parts = line.split(" ", 2)
            if len(parts) == 3:
                out.append((float(parts[0]), parts[1] == "ok", parts[2]))
        return out

    def served_by(self, role: str, since: float) -> bool:
        """A connection started after `since` succeeded through proxy `role`."""
        return any(ok and t > since and via == ADDRESSES[role] for t, ok, via in self.attempts())

    def outage(self, since: float, old: str, new: str) -> dict[str, float | int]:
        """From `since` to the first success through `new`: the connections that failed,
        and how long the client went without a success (since the last one through `old`)."""
        attempts = self.attempts()
        first = next(t for t, ok, via in attempts if ok and t > since and via == ADDRESSES[new])
        last = max((t for t, ok, via in attempts if ok and t < first and via == ADDRESSES[old]))
        return {
            "failed": sum(1 for t, ok, _ in attempts if not ok and since < t < first),
            "no_success_for_s": round(first - last, 2),
        }


def start_pair(lab: Lab) -> tuple[Instance, Instance, Client]:
    """The backend, both proxies ready, the master holding the address, the client loop
    served through it."""
    lab.spawn("lan", "backend", sys.executable, str(PEERS), "backend", BACKEND, str(BACKEND_PORT))
    master, backup = Instance(lab, "p1", "master"), Instance(lab, "p2", "backup")
    for instance in (master, backup):
        instance.start_l4lb()
    for instance in (master, backup):
        assert wait_until(instance.ready, WAIT, 0.2), lab.log(f"l4lb-{instance.role}")
        instance.start_keepalived()
    assert wait_until(lambda: lab.holders(VIP) == {"p1"}, WAIT), lab.log("keepalived-p1")
    client = Client(lab)
    start = time.monotonic()
    assert wait_until(lambda: client.served_by("p1", start), WAIT), lab.log("client")
    return master, backup, client


def print_report(title: str, client: Client, report: dict[str, dict[str, float | int]]) -> None:
    total = len(client.attempts())
    print(f"\n{title}, {total} connections to {VIP}:{PORT} (advert_int 1s, fall 2):")
    for phase, figures in report.items():
        print(f"  {phase:32} {figures['failed']:3} failed, {figures['no_success_for_s']}s")


@pytest.mark.root
def test_virtual_ip_moves_when_the_master_fails(lab: Lab) -> None:
    master, _, client = start_pair(lab)
    report = {}

    # 1. The master's l4lb dies: its track script fails, the backup takes the address.
    since = time.monotonic()
    assert master.l4lb is not None
    master.l4lb.send_signal(signal.SIGKILL)
    assert wait_until(lambda: lab.holders(VIP) == {"p2"}, WAIT), lab.log("keepalived-p1")
    assert wait_until(lambda: client.served_by("p2", since), WAIT), lab.log("client")
    report["kill -9 master's l4lb"] = client.outage(since, "p1", "p2")

    # 2. It comes back: ready again, and the master preempts (the shipped configs' choice).
    since = time.monotonic()
    master.start_l4lb()
    assert wait_until(lambda: lab.holders(VIP) == {"p1"}, WAIT), lab.log("keepalived-p1")
    assert wait_until(lambda: client.served_by("p1", since), WAIT), lab.log("client")
    report["master's l4lb back (preempt)"] = client.outage(since, "p2", "p1")

    # 3. The master's keepalived stops: it gives the address up, the backup takes it.
    since = time.monotonic()
    assert master.keepalived is not None
    master.keepalived.send_signal(signal.SIGTERM)
    assert wait_until(lambda: lab.holders(VIP) == {"p2"}, WAIT), lab.log("keepalived-p2")
    assert wait_until(lambda: client.served_by("p2", since), WAIT), lab.log("client")
    report["stop master's keepalived"] = client.outage(since, "p1", "p2")

    print_report("HA failover", client, report)


@pytest.mark.root
def test_planned_switchover_loses_no_connection(lab: Lab) -> None:
    """docs/HA.md's planned switchover, under the client loop: with the shipped sysctl file
    and the virtual IP on `lo` of both proxies, the shipped l4lb-switchover script stops the
    master's keepalived, waits until its l4lb gets no more connections and stops it (SIGTERM,
    it drains); then the master comes back (l4lb, then keepalived: it preempts). Not one
    connection may fail."""
    for role in ("p1", "p2"):
        lab.hold_on_loopback(role, VIP, CONTRIB / "60-l4lb-ha.conf")
    master, _, client = start_pair(lab)
    assert master.keepalived is not None and master.l4lb is not None
    begin, report = time.monotonic(), {}

    # 1-2. contrib/keepalived/l4lb-switchover: stop keepalived (the address moves; SYNs still
    # sent to this machine are served), wait until l4lb accepts nothing for 1 s, stop l4lb.
    since = time.monotonic()
    result = lab.run(
        "p1",
        "env",
        f"KEEPALIVED_STOP=kill -TERM {master.keepalived.pid}",
        f"L4LB_STOP=kill -TERM {master.l4lb.pid}",
        f"L4LB_ADMIN=127.0.0.1:{ADMIN}",
        sys.executable,
        str(CONTRIB / "l4lb-switchover"),
        *("--stop-l4lb", "--quiet", "1", "--max-wait", "15", VIP),
    )
    assert result.returncode == 0, result.stdout + result.stderr + lab.log("client")
    master.l4lb.wait(timeout=WAIT)
    assert lab.holders(VIP) == {"p2"}, lab.log("keepalived-p2")
    assert wait_until(lambda: client.served_by("p2", since), WAIT), lab.log("client")
    report["stop master's keepalived"] = client.outage(since, "p1", "p2")
    late = sum(1 for t, ok, via in client.attempts() if ok and t > since and via == ADDRESSES["p1"])
    stopped = time.monotonic()
    assert wait_until(lambda: served_since(client, "p2", stopped) >= GRACE, WAIT), lab.log("client")

    # 3. Back: l4lb first, then keepalived, which takes the address back (preempt).
    since = time.monotonic()
    master.start_l4lb()
    assert wait_until(master.ready, WAIT, 0.2), lab.log("l4lb-p1")
    master.start_keepalived()
    assert wait_until(lambda: lab.holders(VIP) == {"p1"}, WAIT), lab.log("keepalived-p1")
    assert wait_until(lambda: client.served_by("p1", since), WAIT), lab.log("client")
    report["switch back (preempt)"] = client.outage(since, "p2", "p1")

    failed = [(t, why) for t, ok, why in client.attempts() if not ok and t > begin]
    print_report("HA planned switchover", client, report)
    print(f"  served by the old holder after its keepalived stopped: {late}")
    assert failed == [], failed


def served_since(client: Client, role: str, since: float) -> int:
    """How many connections started after `since` went through proxy `role`."""
    return sum(1 for t, ok, via in client.attempts() if ok and t > since and via == ADDRESSES[role])


@pytest.mark.skipif(KEEPALIVED is None, reason="keepalived is not installed (./scripts/setup)")
def test_shipped_keepalived_configs_parse(tmp_path: Path) -> None:
    for name in ("master", "backup"):
        path = tmp_path / f"{name}.conf"
        path.write_text(keepalived_conf(name))
        argv = [KEEPALIVED or "keepalived", "--config-test", "--log-console", "-f", str(path)]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0 and result.stderr == "", result.stderr


def test_switchover_refuses_without_the_address_on_lo(tmp_path: Path) -> None:
    """Without the VIP on `lo`, stopping keepalived could lose a connection: refuse first."""
    marker = tmp_path / "stopped"
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "KEEPALIVED_STOP": f"touch {marker}"}
    argv = [sys.executable, str(CONTRIB / "l4lb-switchover"), "192.0.2.100"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env)
    assert result.returncode == 1 and "192.0.2.100 is not on lo" in result.stderr, result.stderr
    assert not marker.exists()
