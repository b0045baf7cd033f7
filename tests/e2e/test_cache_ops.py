"""The cache's operations side end to end: purge through the admin API and `l4lb purge` (by
URL, prefix and tag, on one process and on every worker), its counters in `/status`,
`/metrics` and `l4lb top`, and the memory bound held under a churn of objects."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys

import pytest

from tests.e2e.helpers import free_port, pool_toml, wait_until

MAX_BYTES = 64 * 1024


def hit(headers: dict) -> bool:
    """Answered from the cache (RFC 9211 Cache-Status: `l4lb; hit...`)."""
    return headers.get("cache-status", "").startswith("l4lb; hit")


def config(port: int, admin: int, backend, *, workers: int = 1, cache: str = "") -> str:
    return (
        f'[global]\nworkers = {workers}\ndrain_timeout = "2s"\n'
        f'[admin]\nbind = "127.0.0.1:{admin}"\n'
        f'[listener.web]\nbind = "127.0.0.1:{port}"\nprotocol = "http"\npool = "p"\n'
        '[[listener.web.routes]]\nname = "static"\npath_prefix = "/resp/static/"\n'
        'pool = "p"\ncache = "c"\n'
        '[[listener.web.routes]]\nname = "api"\npool = "p"\ncache = "c"\n'
        f'[cache.c]\nmax_bytes = {MAX_BYTES}\nmax_object = "8k"\n{cache}\n'
        + pool_toml("p", [f'name = "b"\naddress = "{backend.address}"'])
    )


def call(admin: int, method: str, path: str, body=None) -> tuple[int, dict | str]:
    conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=10)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data)
        resp = conn.getresponse()
        raw = resp.read()
        if resp.getheader("content-type", "").startswith("application/json"):
            return resp.status, json.loads(raw)
        return resp.status, raw.decode()
    finally:
        conn.close()


def get(port: int, path: str, *headers: tuple[str, str]) -> tuple[int, dict, bytes]:
    """One request on a new connection (so with workers, the kernel picks one each time)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=dict(headers))
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def cached(path: str, tags: str = "", n: int = 200) -> str:
    """A /resp path the backend answers with max-age=60 (and a Surrogate-Key of `tags`)."""
    out = f"{path}?n={n}&h=cache-control:max-age%3D60"
    return out + (f"&h=surrogate-key:{tags.replace(' ', '%20')}" if tags else "")


def cache_status(admin: int) -> dict:
    code, snap = call(admin, "GET", "/status")
    assert code == 200, snap
    return {c["name"]: c for c in snap.get("caches", ())}["c"]


def l4lb(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "l4lb", *args], capture_output=True, text=True, timeout=30
    )


@pytest.fixture
def site(proxy, http_backends):
    (b,) = http_backends("b")
    port, admin = free_port(), free_port()
    proxy(config(port, admin, b))
    return port, admin, b


def test_purge_by_url_prefix_and_tag_through_the_api(site):
    port, admin, b = site
    paths = {
        "a": cached("/resp/static/a.css", "css v1"),
        "b": cached("/resp/static/b.js", "js v1"),
        "c": cached("/resp/api/c", "api v1"),
        "d": cached("/resp/api/d", "api"),
    }
    for path in paths.values():
        get(port, path)
        assert hit(get(port, path)[1])
    assert b.requests == 4
    host = f"127.0.0.1:{port}"

    # exact URL (as the cache keys it: scheme://host/path?query)
    code, out = call(admin, "POST", "/cache/c/purge", {"url": f"http://{host}{paths['a']}"})
    assert code == 200 and out["purged"] == 1 and out["caches"] == {"c": 1}, out
    assert not hit(get(port, paths["a"])[1]) and b.requests == 5
    assert hit(get(port, paths["b"])[1])
    # a URL that is not stored: 0
    code, out = call(admin, "POST", "/cache/purge", {"url": f"http://{host}/nothing"})
    assert code == 200 and out["purged"] == 0

    # tag: only the responses whose Surrogate-Key named it
    code, out = call(admin, "POST", "/cache/c/purge", {"tag": "api"})
    assert out["purged"] == 2, out
    assert not hit(get(port, paths["c"])[1])
    assert not hit(get(port, paths["d"])[1])
    assert hit(get(port, paths["b"])[1]) and b.requests == 7

    # prefix, written without a scheme (both http and https)
    code, out = call(admin, "POST", "/cache/purge", {"prefix": f"{host}/resp/static/"})
    assert out["purged"] == 2, out  # a.css (stored again) and b.js
    assert not hit(get(port, paths["b"])[1]) and b.requests == 8
    assert hit(get(port, paths["c"])[1])

    # everything: b.js, c and d were stored again since
    code, out = call(admin, "POST", "/cache/purge", {"all": True})
    assert out["purged"] == 3, out
    assert cache_status(admin)["objects"] == 0
    assert cache_status(admin)["purged"] == 1 + 2 + 2 + 3


@pytest.mark.parametrize(
    ("path", "body", "status", "error"),
    [
        ("/cache/nope/purge", {"all": True}, 404, "no cache named 'nope'; caches: c"),
        ("/cache/c/purge", {}, 400, "nothing to purge"),
        ("/cache/c/purge", {"url": 3}, 400, "url 3: expected a non-empty string"),
        ("/cache/c/purge", {"tag": "a b"}, 400, "expected a tag without spaces"),
        ("/cache/c/purge", {"ban": "x"}, 400, "unknown field 'ban'"),
        ("/cache/c/purge", "not an object", 400, "expected a JSON object"),
    ],
)
def test_bad_purges_get_a_clear_answer(site, path, body, status, error):
    _, admin, _ = site
    code, out = call(admin, "POST", path, body)
    assert code == status and error in out["error"], out
    code, out = call(admin, "GET", "/cache/c/purge")
    assert code == 405
    assert call(admin, "GET", "/status")[0] == 200  # still serving


def test_l4lb_purge_command(site):
    port, admin, b = site
    for tag in ("x", "y"):
        get(port, cached(f"/resp/api/{tag}", tag))
    out = l4lb("purge", "--admin", f"127.0.0.1:{admin}", "--tag", "x")
    assert out.returncode == 0 and out.stdout.strip() == "purged 1 (c 1)", out
    out = l4lb(
        "purge", "--admin", f"127.0.0.1:{admin}", f"127.0.0.1:{port}{cached('/resp/api/y', 'y')}"
    )
    assert out.returncode == 0 and out.stdout.startswith("purged 1 "), out
    out = l4lb("purge", "--admin", f"127.0.0.1:{admin}", "--cache", "zz", "--all")
    assert out.returncode == 1 and "no cache named 'zz'" in out.stderr, out
    out = l4lb("purge", "--admin", f"127.0.0.1:{admin}")
    assert out.returncode == 1 and "purge what?" in out.stderr, out
    assert b.requests == 2


def test_counters_in_status_metrics_and_top(site):
    port, admin, _ = site
    path = cached("/resp/static/s.css")
    get(port, path)  # miss, stored
    get(port, path)  # hit
    get(port, path)  # hit
    get(port, cached("/resp/api/x"))  # miss, stored
    get(port, "/resp/api/plain?n=10")  # miss, not stored (no freshness)
    c = cache_status(admin)
    assert (c["hits"], c["misses"], c["stale"], c["stored"]) == (2, 3, 0, 2), c
    assert c["objects"] == 2 and 0 < c["bytes"] <= c["max_bytes"] == MAX_BYTES
    routes = {r["route"]: r for r in c["routes"]}
    assert "static" in routes, c
    assert routes["static"] == {
        "listener": "web",
        "route": "static",
        "hits": 2,
        "misses": 1,
        "stale": 0,
        "stored": 1,
    }
    assert (routes["api"]["misses"], routes["api"]["stored"]) == (2, 1)

    code, text = call(admin, "GET", "/metrics")
    assert code == 200
    labels = 'cache="c",listener="web",route="static"'
    assert f'l4lb_cache_requests_total{{{labels},result="hit"}} 2' in text
    assert f'l4lb_cache_requests_total{{{labels},result="miss"}} 1' in text
    assert f"l4lb_cache_stored_total{{{labels}}} 1" in text
    assert 'l4lb_cache_objects{cache="c",tier="memory"} 2' in text
    assert f'l4lb_cache_max_bytes{{cache="c",tier="memory"}} {MAX_BYTES}' in text

    out = l4lb("top", "--admin", f"127.0.0.1:{admin}", "--once")
    assert out.returncode == 0, out
    line = next(x for x in out.stdout.splitlines() if x.startswith("cache c:"))
    assert "40% hit" in line and "2 hit 3 miss 0 stale" in line and "2 obj" in line, line


def test_memory_bound_holds_under_a_churn_of_objects(site):
    port, admin, _ = site
    seen = []
    for i in range(150):  # 150 distinct ~4 KiB objects through a 64 KiB store
        code, _, body = get(port, cached(f"/resp/api/churn/{i}", n=4000))
        assert code == 200 and len(body) == 4000
        if i % 10 == 9:
            c = cache_status(admin)
            seen.append(c["bytes"])
            assert c["bytes"] <= c["max_bytes"] == MAX_BYTES, c
    c = cache_status(admin)
    assert c["stored"] == 150 and c["evictions"] >= 150 - MAX_BYTES // 4000, c
    assert c["objects"] == c["stored"] - c["evictions"] and max(seen) > MAX_BYTES // 2
    # the newest objects are still there, the oldest not
    assert hit(get(port, cached("/resp/api/churn/149", n=4000))[1])
    assert not hit(get(port, cached("/resp/api/churn/0", n=4000))[1])


def test_purge_reaches_every_worker(proxy, http_backends):
    (b,) = http_backends("b")
    port, admin = free_port(), free_port()
    p = proxy(config(port, admin, b, workers=2))
    assert p.wait_log(r"all 2 workers serving", 20), p.log()
    path = cached("/resp/static/w.css", "wtag")
    # New connections until both workers have fetched (and stored) it once each.
    assert wait_until(lambda: get(port, path) and b.requests >= 2, 20), b.requests
    assert b.requests == 2
    assert wait_until(lambda: cache_status(admin)["objects"] == 2), cache_status(admin)
    code, out = call(admin, "POST", "/cache/c/purge", {"tag": "wtag"})
    assert code == 200 and out == {"purged": 2, "caches": {"c": 2}, "workers": 2, "unanswered": []}
    assert wait_until(lambda: cache_status(admin)["objects"] == 0), cache_status(admin)
    out = l4lb("purge", "--admin", f"127.0.0.1:{admin}", "--all")
    assert out.returncode == 0 and out.stdout.strip() == "purged 0 (c 0) on 2 workers", out
    # the merged counters
    c = cache_status(admin)
    assert c["purged"] == 2 and c["stored"] == 2 and c["max_bytes"] == 2 * MAX_BYTES, c


def disk_files(root) -> list:
    return [p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".tmp")]


def test_disk_tier_is_shared_by_workers_and_survives_a_restart(proxy, http_backends, tmp_path):
    (b,) = http_backends("b")
    port, admin = free_port(), free_port()
    root = tmp_path / "disk"
    extra = f'disk_path = "{root}"\ndisk_max_bytes = "1m"\n'
    text = config(port, admin, b, workers=2, cache=extra)
    p = proxy(text)
    assert p.wait_log(r"all 2 workers serving", 20), p.log()
    path = cached("/resp/static/d.css", "dtag", n=3000)
    code, h, body = get(port, path)
    assert code == 200 and len(body) == 3000 and not hit(h)
    assert wait_until(lambda: len(disk_files(root)) == 1), list(root.rglob("*"))
    # 40 new connections: the kernel spreads them over both workers, and the worker that
    # did not fetch it finds it on disk
    for _ in range(40):
        code, h, body = get(port, path)
        assert code == 200 and hit(h) and len(body) == 3000
    assert b.requests == 1
    # both workers hold it in memory now, one of them having read it from the disk
    assert wait_until(lambda: cache_status(admin)["objects"] == 2), cache_status(admin)
    c = cache_status(admin)
    assert c["disk_files"] == 1 and 3000 < c["disk_bytes"] <= c["disk_max_bytes"], c
    assert p.stop() == 0

    # a new instance (one process) starts with an empty memory tier and the same disk
    p = proxy(config(port, admin, b, cache=extra))
    code, h, body = get(port, path)
    assert code == 200 and hit(h) and len(body) == 3000 and int(h["age"]) >= 0
    assert b.requests == 1
    code, text_ = call(admin, "GET", "/metrics")
    assert 'l4lb_cache_objects{cache="c",tier="disk"} 1' in text_
    # a purge removes it from memory and disk
    code, out = call(admin, "POST", "/cache/c/purge", {"tag": "dtag"})
    assert code == 200 and out["purged"] == 1, out
    assert disk_files(root) == []
    assert not hit(get(port, path)[1]) and b.requests == 2


def test_disk_bound_holds_under_churn(site_disk):
    port, admin, root = site_disk
    for i in range(120):  # 120 distinct ~6 KiB objects through a 256 KiB directory
        code, _, body = get(port, cached(f"/resp/api/disk/{i}", n=6000))
        assert code == 200 and len(body) == 6000
    size = sum(f.stat().st_size for f in disk_files(root))
    assert 128 * 1024 < size <= 256 * 1024 * 1.1, size  # within one scan's slack
    c = cache_status(admin)
    assert c["disk_bytes"] <= c["disk_max_bytes"] * 1.1 and c["bytes"] <= c["max_bytes"], c


@pytest.fixture
def site_disk(proxy, http_backends, tmp_path):
    (b,) = http_backends("b")
    port, admin = free_port(), free_port()
    root = tmp_path / "disk"
    proxy(config(port, admin, b, cache=f'disk_path = "{root}"\ndisk_max_bytes = "256k"\n'))
    return port, admin, root


def test_bad_disk_path_is_a_located_config_error(tmp_path, http_backends):
    (b,) = http_backends("b")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    conf = tmp_path / "l4lb.toml"
    conf.write_text(config(free_port(), free_port(), b, cache=f'disk_path = "{blocker}"\n'))
    out = l4lb("check", str(conf))
    assert out.returncode == 1 and "cache.c.disk_path" in out.stderr, out
    assert "not a directory" in out.stderr and "Traceback" not in out.stderr
