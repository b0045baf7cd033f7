"""Network namespaces for the scaling test: two l4lb instances behind an ECMP route, a
backend and a Redis, in a private range that exists only inside the namespaces.

    client (A .10) ── router (A .1 | B .1) ──┬── br0 in `lan` (B .2: the backend)
       ECMP: VIP .100 via p1 and p2, ├── p1 (B .11, VIP on lo)
       hashed on addresses and ports ├── p2 (B .12, VIP on lo)
                                     └── redis (B .3)

The router is what a data centre's ECMP or anycast router does: one route to the virtual IP
with two next hops, a flow hashed to one (`fib_multipath_hash_policy = 1`: source and
destination address and port), so each new connection of the client lands on one instance
and stays there. The instances hold the virtual IP on `lo` (no ARP for it: the router routes
to their own addresses). Same naming and clean-up as tests/e2e/netlab.py (`Lab`).
"""

from __future__ import annotations

from pathlib import Path

from tests.e2e.netlab import Lab, _ip

__all__ = ["BACKEND", "INSTANCES", "REDIS", "VIP", "ScaleLab"]

NET_A, NET_B = "10.253.78", "10.253.79"  # client side, server side
VIP = "10.253.80.100"
BACKEND, REDIS = f"{NET_B}.2", f"{NET_B}.3"
INSTANCES = {"p1": f"{NET_B}.11", "p2": f"{NET_B}.12"}


class ScaleLab(Lab):
    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        roles = ("lan", "client", "router", "p1", "p2", "redis")
        self.ns = {role: f"{self.tag}-{role}" for role in roles}

    def build(self) -> None:
        ns = self.ns
        lan = ns["lan"]
        steps: list[tuple[str, ...]] = [("netns", "add", name) for name in ns.values()]
        steps += [
            ("-n", lan, "link", "add", "br0", "type", "bridge"),
            ("-n", lan, "addr", "add", f"{BACKEND}/24", "dev", "br0"),
            ("-n", lan, "link", "set", "br0", "up"),
            ("-n", lan, "link", "set", "lo", "up"),
            ("-n", lan, "route", "add", "default", "via", f"{NET_B}.1"),
            # client <-> router: one veth pair, made in the client's namespace
            ("-n", ns["client"], "link", "add", "eth0", "type", "veth", "peer", "name", "a0"),
            ("-n", ns["client"], "link", "set", "a0", "netns", ns["router"]),
            ("-n", ns["client"], "addr", "add", f"{NET_A}.10/24", "dev", "eth0"),
            ("-n", ns["client"], "link", "set", "eth0", "up"),
            ("-n", ns["client"], "link", "set", "lo", "up"),
            ("-n", ns["client"], "route", "add", "default", "via", f"{NET_A}.1"),
            ("-n", ns["router"], "addr", "add", f"{NET_A}.1/24", "dev", "a0"),
            ("-n", ns["router"], "link", "set", "a0", "up"),
        ]
        for role, address in (("router", f"{NET_B}.1"), ("redis", REDIS), *INSTANCES.items()):
            dev = "b0" if role == "router" else "eth0"
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
                    dev,
                    "netns",
                    ns[role],
                ),
                ("-n", lan, "link", "set", role, "master", "br0", "up"),
                ("-n", ns[role], "addr", "add", f"{address}/24", "dev", dev),
                ("-n", ns[role], "link", "set", dev, "up"),
                ("-n", ns[role], "link", "set", "lo", "up"),
            ]
            if role != "router":
                steps.append(("-n", ns[role], "route", "add", "default", "via", f"{NET_B}.1"))
        for role in INSTANCES:
            steps.append(("-n", ns[role], "addr", "add", f"{VIP}/32", "dev", "lo"))
        steps.append(
            (
                "-n",
                ns["router"],
                "route",
                "add",
                f"{VIP}/32",
                *(w for a in INSTANCES.values() for w in ("nexthop", "via", a)),
            )
        )
        for step in steps:
            result = _ip(*step)
            if result.returncode != 0:
                raise AssertionError(f"ip {' '.join(step)}: {result.stderr.strip()}")
        for setting in ("net.ipv4.ip_forward=1", "net.ipv4.fib_multipath_hash_policy=1"):
            result = self.run("router", "sysctl", "-qw", setting)
            assert result.returncode == 0, result.stderr
