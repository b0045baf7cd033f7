"""Stand-ins shared by the stats, metrics and view tests: a runtime-shaped object built from a
real config (real `Pool` and `Server` objects; listeners are plain objects with the attributes
`Listener` has), and a busy snapshot made from it by the real `Stats`."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from l4lb.config import load_text
from l4lb.pool import build_pools
from l4lb.stats import Stats

__all__ = ["CONFIG", "busy_snapshot", "make_runtime"]

CONFIG = """\
[listener.web]
bind = ["127.0.0.1:8080", "[::1]:8080"]
pool = "api"

[pool.api]
balance = "least_conn"

[pool.api.health]
type = "tcp"
rise = 1
fall = 1

[[pool.api.servers]]
name = "a"
address = "127.0.0.1:9001"
weight = 3

[[pool.api.servers]]
name = "b"
address = "127.0.0.1:9002"
backup = true
"""

BUSY = """\
[listener.web]
bind = ["0.0.0.0:80", "[::]:80"]
pool = "web"

[listener.api]
bind = "127.0.0.1:8443"
pool = "api"

[pool.web]
balance = "round_robin"
slow_start = "60s"

[pool.web.health]
type = "http"
path = "/healthz"
rise = 1
fall = 1

[[pool.web.servers]]
name = "web-1"
address = "10.0.0.11:8080"

[[pool.web.servers]]
name = "web-2"
address = "10.0.0.12:8080"

[[pool.web.servers]]
name = "web-3"
address = "10.0.0.13:8080"

[[pool.web.servers]]
name = "web-4"
address = "10.0.0.14:8080"

[[pool.web.servers]]
name = "web-spare"
address = "10.0.0.19:8080"
backup = true

[pool.api]
balance = "least_conn"

[[pool.api.servers]]
name = "api-1"
address = "10.0.1.1:9000"
weight = 5
"""


def make_runtime(text: str = CONFIG, now: float = 0.0) -> SimpleNamespace:
    config = load_text(text, "site.toml")
    pools = build_pools(config.pools, {}, now)
    listeners = {
        lc.name: SimpleNamespace(
            name=lc.name,
            config=lc,
            pool=pools[lc.pool],
            sessions=[],
            total=0,
            refused=0,
            accepting=True,
        )
        for lc in config.listeners
    }
    return SimpleNamespace(config=config, pools=pools, listeners=listeners, retired=[], reloads=0)


def busy_snapshot() -> dict[str, Any]:
    """A minute of traffic on five web servers in every state and one api server."""
    rt = make_runtime(BUSY, now=0.0)
    stats = Stats(0.0, 1_700_000_000.0, pid=4242)
    web1, web2, web3, web4, spare = rt.pools["web"].servers
    (api1,) = rt.pools["api"].servers
    for t in range(0, 61):
        now = 1000.0 + t
        rt.listeners["web"].total += 10 + t
        rt.listeners["api"].total += 3
        for i, s in enumerate((web1, web2, web3, spare, api1)):
            s.total += (t % 7) * (i + 1)
            s.bytes_in += 1500 * t
            s.bytes_out += 64_000 * t
        if t == 30:
            web2.on_check(False, now, "http: 503")
        if t == 40:
            web3.draining = True
        if t == 50:
            web4.on_check(False, now, "http: timeout")
            web4.on_check(True, now, "http: 200")  # back up: ramps over slow_start
        stats.tick(rt, now)
    for v in (0.0004, 0.0005, 0.0006, 0.002, 0.04):
        stats.connect_latency("web", "web-1").observe(v)
    stats.connect_latency("api", "api-1").observe(0.0011)
    stats.event(1055.0, "reload_failed", "site.toml:12: pool.web.balance: unknown algorithm")
    web1.active, api1.active = 12, 3
    return stats.snapshot(rt, 1061.0)
