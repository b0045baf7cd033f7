"""A small network of Linux network namespaces for the HA test: a client, two proxies and a
backend on one bridge, with addresses in a private range that exists only inside them.

    client (.10) ──┐
    proxy1 (.11) ──┼── br0 in `lan` (.2: the backend listens here)
    proxy2 (.12) ──┘            virtual IP .100 on whichever proxy keepalived chose

Nothing is configured in the machine's own namespace: every link is made inside `lan` with its
peer moved straight into its namespace. Namespaces are named `l4ha<pid>-<role>`, so a run can
remove what an earlier, killed run left behind (its pid is gone) without touching another's.
`close()` kills every process started here (by pid) and every process still inside the
namespaces, then deletes them; the test calls it however it ends.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

__all__ = ["NET", "Lab", "cannot_use"]

NET = "10.253.77"  # a /24 of 10.0.0.0/8, only ever inside these namespaces
ADDRESSES = {"client": f"{NET}.10", "p1": f"{NET}.11", "p2": f"{NET}.12"}
BACKEND = f"{NET}.2"
PREFIX = "l4ha"
_OURS = re.compile(rf"^{PREFIX}(\d+)-\w+$")


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20, check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _namespaces() -> list[str]:
    listing = _ip("netns", "list").stdout
    return [line.split()[0] for line in listing.splitlines() if line.strip()]


def _remove(ns: str) -> None:
    """Kill what still runs inside `ns` (processes this test started there), then delete it."""
    for pid in _ip("netns", "pids", ns).stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    _ip("netns", "del", ns)


def remove_stale() -> None:
    """Delete namespaces left by an earlier run of this test whose process is gone."""
    for ns in _namespaces():
        match = _OURS.match(ns)
        if match and not _alive(int(match[1])):
            _remove(ns)


def cannot_use(keepalived: str | None) -> str:
    """Why this machine cannot run the HA test ("" if it can)."""
    if os.geteuid() != 0:
        return "needs root to make network namespaces (run the suite as root)"
    if keepalived is None:
        return "keepalived is not installed (./scripts/setup installs it when run as root)"
    probe = f"{PREFIX}{os.getpid()}-probe"
    made = _ip("netns", "add", probe)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    veth = _ip("-n", probe, "link", "add", "va", "type", "veth", "peer", "name", "vb")
    _remove(probe)
    if veth.returncode != 0:
        return f"cannot make veth pairs in a namespace: {veth.stderr.strip()}"
    return ""


class Lab:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.tag = f"{PREFIX}{os.getpid()}"
        self.ns = {role: f"{self.tag}-{role}" for role in ("lan", "client", "p1", "p2")}
        self.procs: list[subprocess.Popen[bytes]] = []

    def run(self, role: str, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.ns[role], *argv],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )

    def build(self) -> None:
        remove_stale()
        lan = self.ns["lan"]
        steps: list[tuple[str, ...]] = [("netns", "add", ns) for ns in self.ns.values()]
        steps += [
            ("-n", lan, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0"),
            ("-n", lan, "addr", "add", f"{BACKEND}/24", "dev", "br0"),
            ("-n", lan, "link", "set", "br0", "up"),
            ("-n", lan, "link", "set", "lo", "up"),
        ]
        for role, address in ADDRESSES.items():
            ns = self.ns[role]
            steps += [
                (
                    "-n",
                    lan,
                    "link",
                    "add",
                    role,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    ns,
                ),
                ("-n", lan, "link", "set", role, "master", "br0", "up"),
                ("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0"),
                ("-n", ns, "link", "set", "eth0", "up"),
                ("-n", ns, "link", "set", "lo", "up"),
            ]
        for step in steps:
            result = _ip(*step)
            if result.returncode != 0:
                raise AssertionError(f"ip {' '.join(step)}: {result.stderr.strip()}")
        for role in ("p1", "p2"):
            # The standby binds the virtual IP before it has it (docs/HA.md).
            result = self.run(role, "sysctl", "-qw", "net.ipv4.ip_nonlocal_bind=1")
            assert result.returncode == 0, result.stderr

    def hold_on_loopback(self, role: str, address: str, sysctl: Path) -> None:
        """Apply the shipped sysctl file in `role`'s namespace and put `address` on its `lo`
        (docs/HA.md, planned switchover): it then serves the address whoever answers ARP."""
        for argv in (
            ("sysctl", "-q", "-p", str(sysctl)),
            ("ip", "addr", "add", f"{address}/32", "dev", "lo"),
        ):
            result = self.run(role, *argv)
            assert result.returncode == 0, f"{' '.join(argv)}: {result.stderr}"

    def spawn(self, role: str, name: str, *argv: str) -> subprocess.Popen[bytes]:
        """Start `argv` inside `role`'s namespace, output in `<tmp>/<name>.log`."""
        log = (self.tmp / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns[role], *argv],  # `ip` execs argv: same pid
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.tmp,
            start_new_session=True,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def holders(self, address: str) -> set[str]:
        """The proxies that have `address` on their eth0 now."""
        out = set()
        for role in ("p1", "p2"):
            shown = _ip("-n", self.ns[role], "-4", "-o", "addr", "show", "dev", "eth0").stdout
            if f" {address}/" in shown:
                out.add(role)
        return out

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        for ns in self.ns.values():
            _remove(ns)
