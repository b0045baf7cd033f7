"""Readiness (`GET /ready`, keepalived's track script) from a config and a stats snapshot,
and the admin route that answers it, without sockets."""

from __future__ import annotations

import json

from l4lb.admin import AdminApp, Request
from l4lb.config import load_text
from l4lb.readiness import readiness
from l4lb.stats import Stats
from tests.unit.snapshots import make_runtime

TWO = """\
[listener.web]
bind = "127.0.0.1:8080"
pool = "web"

[listener.edge]
bind = "127.0.0.1:8443"
protocol = "tls-passthrough"
pool = "web"
routes = [{ sni = ["api.example.com"], pool = "api" }]

[pool.web]
[[pool.web.servers]]
name = "w1"
address = "127.0.0.1:9001"
[[pool.web.servers]]
name = "w2"
address = "127.0.0.1:9002"
backup = true

[pool.api]
[[pool.api.servers]]
name = "a1"
address = "127.0.0.1:9101"

[pool.unused]
[[pool.unused.servers]]
name = "u1"
address = "127.0.0.1:9201"
"""

HTTP = """\
[listener.site]
bind = "127.0.0.1:8080"
protocol = "http"

[[listener.site.routes]]
path_prefix = "/api/"
pool = "api"

[[listener.site.routes]]
respond = { status = 404 }

[pool.api]
[[pool.api.servers]]
name = "a1"
address = "127.0.0.1:9101"
"""


def snap(listeners=("web", "edge"), accepting=True, **states: str) -> dict:
    """A snapshot shaped like `Stats.snapshot`: servers named in `states` get that state."""
    pools = {"web": ("w1", "w2"), "api": ("a1",), "unused": ("u1",)}
    return {
        "listeners": [{"name": n, "accepting": accepting} for n in listeners],
        "pools": [
            {"name": p, "servers": [{"name": s, "state": states.get(s, "up")} for s in names]}
            for p, names in pools.items()
        ],
    }


def test_ready_when_listeners_accept_and_each_used_pool_has_a_server_up():
    config = load_text(TWO, "site.toml")
    assert readiness(config, snap()).json() == {"ready": True, "reasons": []}
    # One server up is enough, a backup or one ramping up in slow start included; a pool
    # no listener uses does not count.
    assert readiness(config, snap(w1="down", a1="slow_start", u1="down")).ready


def test_not_ready_says_every_reason():
    config = load_text(TWO, "site.toml")
    got = readiness(config, snap(listeners=("web",), w1="down", w2="draining", a1="down"))
    assert not got.ready
    assert got.reasons == (
        "listener edge is not bound yet",
        "pool web has no server up (w1 down, w2 draining)",
        "pool api has no server up (a1 down)",  # reached only through an SNI route
    )


def test_stopping_listeners_and_no_config_are_not_ready():
    config = load_text(TWO, "site.toml")
    got = readiness(config, snap(accepting=False))
    assert got.reasons == (
        "listener web is not accepting connections (stopping)",
        "listener edge is not accepting connections (stopping)",
    )
    assert readiness(None, snap()).reasons == ("no config is loaded",)


def test_http_routes_count_their_forwarding_pools():
    config = load_text(HTTP, "site.toml")
    listeners = [{"name": "site", "accepting": True}]
    down = {"listeners": listeners, "pools": [{"name": "api", "servers": []}]}
    assert readiness(config, down).reasons == ("pool api has no server up (no servers)",)


def test_admin_ready_route():
    rt = make_runtime()  # pool api: a (health-checked, starts up), b (backup)
    app = AdminApp(rt, Stats(0.0, 0.0), None, clock=lambda: 5.0)
    r = app.handle(Request("GET", "/ready"))
    assert r.status == 200 and json.loads(r.body) == {"ready": True, "reasons": []}
    for server in rt.pools["api"].servers:
        server.draining = True
    r = app.handle(Request("GET", "/ready"))
    assert r.status == 503
    assert json.loads(r.body)["reasons"] == ["pool api has no server up (a draining, b draining)"]
    r = app.handle(Request("POST", "/ready"))
    assert r.status == 405 and ("Allow", "GET, HEAD") in r.headers
    assert AdminApp(rt, Stats(0.0, 0.0), "t").handle(Request("GET", "/ready")).status == 401
