"""The cache benchmark (issue 12, "Benchmark"): l4lb with a `[cache.NAME]` route beside nginx
`proxy_cache`, the same backend, the same Zipf workload, each proxy on CPU 0 and the load
client and backend on CPU 1. Run it through `bench/run-cache`, which installs the tools.

- Objects: BENCH_OBJECTS (10,000) served by a 1-worker nginx backend with the cache headers
  sites send: 70% static files (`/static/N.css|js|svg`, 0.5 to 32 KB, `Cache-Control:
  public, max-age=31536000, immutable`, with ETag and Last-Modified), 20% small API answers
  (`/api/N`, JSON, `public, max-age=10`), 10% personal ones (`/me/N`, `no-store`). Their
  popularity follows Zipf's law (P(rank k) ~ 1/k^BENCH_ZIPF_S, 0.9 by default); ranks are
  shuffled over the kinds with a fixed seed.
- Load: `wrk -t1 -c32 --latency` with bench/zipf.lua, which draws each request's object from
  that distribution with a seeded PRNG, so both proxies see the same sequence. Each round
  starts every proxy with an empty cache, warms it for BENCH_WARMUP (10) seconds (seed 1), then
  measures BENCH_SECONDS (seed 2).
- The backend counts: its access log (one line per request, the URI) gives the requests
  that reached it during the measured run, in all and for /static/; the hit ratio is one
  minus the share of the requests that reached it.
- Hit path: `wrk -c32` on one hot 2 KB static object, stored beforehand, through each proxy;
  and through an l4lb route without the cache (`l4lb-proxied`), to show what a hit saves.
- Targets (issue 12): the backend's load on the static share reduced by at least 80%
  (l4lb); hit-path req/s at least 0.75x nginx's.
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import (
    LOAD_CPU,
    PROXY_CPU,
    VENV,
    Meter,
    Proc,
    Procs,
    commit,
    env_float,
    env_int,
    first_line,
    free_port,
    l4lb_version,
    log,
    machine,
    nginx_config,
    nginx_temp_paths,
    now_utc,
    prepare_process,
    start_nginx,
    wait_accepting,
)
from http1 import parse_wrk

HERE = Path(__file__).resolve().parent
SECONDS = env_int("BENCH_SECONDS", 5)
WARMUP = env_int("BENCH_WARMUP", 10)
ROUNDS = env_int("BENCH_ROUNDS", 3)
CONNS = env_int("BENCH_WRK_CONNS", 32)
OBJECTS = env_int("BENCH_OBJECTS", 10_000)
ZIPF_S = env_float("BENCH_ZIPF_S", 0.9)
STATIC_CC = "public, max-age=31536000, immutable"
API_CC = "public, max-age=10"
HOT = "/static/hot.css"


def make_site(www: Path, objects_file: Path) -> dict[str, int]:
    """The backend's files and the Zipf weights file for zipf.lua; counts by kind."""
    rng = random.Random(12)
    kinds = ["static"] * 7 + ["api"] * 2 + ["me"]
    counts = dict.fromkeys(("static", "api", "me"), 0)
    paths = []
    for d in ("static", "api", "me"):
        (www / d).mkdir(parents=True, exist_ok=True)
    text = b"".join(b"/* rule %d */ .c%d { margin: %dpx; }\n" % (i, i, i % 17) for i in range(2000))
    for i in range(OBJECTS):
        kind = kinds[i % len(kinds)]
        counts[kind] += 1
        if kind == "static":
            size = int(min(32768, max(512, rng.lognormvariate(8.3, 1.0))))
            path = f"/static/{i}.{('css', 'js', 'svg')[i % 3]}"
            body = (text * (size // len(text) + 1))[:size]
        else:
            path = f"/{kind}/{i}"
            body = b'{"id": %d, "name": "item %d", "price": %d.99, "tags": ["a", "b"]}' % (
                i,
                i,
                i % 100,
            )
        (www / path.lstrip("/")).write_bytes(body)
        paths.append(path)
    (www / HOT.lstrip("/")).write_bytes(text[:2048])
    rng.shuffle(paths)  # popularity ranks over the kinds
    objects_file.write_text(
        "".join(f"{1 / (k + 1) ** ZIPF_S:.12g} {p}\n" for k, p in enumerate(paths))
    )
    return counts


def backend_config(tmp: Path, port: int, www: Path, log_path: Path) -> str:
    return nginx_config(
        tmp,
        "backend",
        4096,
        f"""http {{
    log_format uri '$uri';
    access_log {log_path} uri;
{nginx_temp_paths(tmp, "backend")}
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    types {{ text/css css; application/javascript js; image/svg+xml svg; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {www};
        location /static/ {{ add_header Cache-Control "{STATIC_CC}"; }}
        location /api/ {{ default_type application/json; add_header Cache-Control "{API_CC}"; }}
        location /me/ {{ default_type application/json; add_header Cache-Control "no-store"; }}
    }}
}}
""",
    )


def nginx_cache_config(tmp: Path, port: int, backend: int, cache_dir: Path) -> str:
    return nginx_config(
        tmp,
        "nginx",
        8192,
        f"""http {{
    access_log off;
{nginx_temp_paths(tmp, "nginx")}
    keepalive_requests 1000000;
    proxy_cache_path {cache_dir} levels=1:2 keys_zone=c:32m max_size=1g inactive=1h
                     use_temp_path=off;
    upstream backend {{
        server 127.0.0.1:{backend};
        keepalive 32;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache c;
        }}
    }}
}}
""",
    )


def l4lb_cache_config(port: int, backend: int) -> str:
    return f"""[global]
access_log = false
workers = 1

[listener.bench]
bind = "127.0.0.1:{port}"
protocol = "http"
pool = "bench"
max_connections = 10000
backlog = 4096

[listener.bench.http]
max_requests = 10000000

[[listener.bench.routes]]
name = "proxied"
path_prefix = "/nocache/"
strip_prefix = "/nocache"
pool = "bench"

[[listener.bench.routes]]
name = "cached"
path_prefix = "/"
pool = "bench"
cache = "c"

[cache.c]
max_bytes = "512m"

[pool.bench]
[[pool.bench.servers]]
address = "127.0.0.1:{backend}"
"""


class Backend:
    """The backend nginx and its access log, read from where the last count stopped."""

    def __init__(self, proc: Proc, log_path: Path) -> None:
        self.proc, self.log_path, self.offset = proc, log_path, 0

    def skip(self) -> None:
        self.offset = self.log_path.stat().st_size

    def count(self) -> tuple[int, int]:
        """(requests, /static/ requests) since the last `skip` or `count`."""
        with open(self.log_path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        lines = data.splitlines()
        return len(lines), sum(1 for line in lines if line.startswith(b"/static/"))


def wrk(port: int, path: str, seconds: int, env: dict | None = None) -> dict:
    argv = ["wrk", "-t1", f"-c{CONNS}", f"-d{seconds}s", "--latency"]
    if env is not None:
        argv += ["-s", str(HERE / "zipf.lua")]
    run = subprocess.run(
        [*argv, f"http://127.0.0.1:{port}{path}"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )
    try:
        out = parse_wrk(run.stdout)
    except ValueError as exc:
        raise RuntimeError(f"wrk: {exc}: {run.stdout[-300:]} {run.stderr[-300:]}") from exc
    if out["errors"] or out["non2xx"]:
        raise RuntimeError(f"wrk {path}: errors {out['errors']} non-2xx {out['non2xx']}")
    for line in run.stdout.splitlines():
        if line.startswith("zipf: "):
            words = line.split()
            out["static"], out["other"] = int(words[2]), int(words[4])
    return out


def start_proxy(procs: Procs, tmp: Path, name: str, backend: int) -> tuple[Proc, int]:
    port = free_port()
    if name == "l4lb":
        cfg = tmp / "l4lb.toml"
        cfg.write_text(l4lb_cache_config(port, backend))
        proc = procs.start("l4lb", [str(VENV / "l4lb"), "up", str(cfg)], PROXY_CPU)
    else:
        cache_dir = tmp / "nginx-cache"
        shutil.rmtree(cache_dir, ignore_errors=True)
        cfg = tmp / "nginx.conf"
        cfg.write_text(nginx_cache_config(tmp, port, backend, cache_dir))
        proc = start_nginx(procs, "nginx", cfg, PROXY_CPU)
    wait_accepting(proc, port)
    return proc, port


def one_round(procs: Procs, tmp: Path, backend: Backend, port_b: int, objects: Path) -> dict:
    out = {}
    for name in ("l4lb", "nginx"):
        proc, port = start_proxy(procs, tmp, name, port_b)
        try:
            env = {"BENCH_ZIPF_OBJECTS": str(objects), "BENCH_ZIPF_SEED": "1"}
            log(f"{name}: warm-up {WARMUP}s")
            wrk(port, "/", WARMUP, env)
            backend.skip()
            meter = Meter(proc, backend.proc)
            zipf = wrk(port, "/", SECONDS, {**env, "BENCH_ZIPF_SEED": "2"})
            zipf["proxy_cpu"] = meter.stop()["proxy_cpu"]
            zipf["backend"], zipf["backend_static"] = backend.count()
            wrk(port, HOT, 1)  # stored, and the connections warm
            meter = Meter(proc, backend.proc)
            hit = wrk(port, HOT, SECONDS)
            hit["proxy_cpu"] = meter.stop()["proxy_cpu"]
            hit["backend"] = backend.count()[0]
            out[name] = {"zipf": zipf, "hit": hit}
            if name == "l4lb":
                meter = Meter(proc, backend.proc)
                proxied = wrk(port, "/nocache" + HOT, SECONDS)
                proxied["proxy_cpu"] = meter.stop()["proxy_cpu"]
                backend.count()
                out["l4lb-proxied"] = {"hit": proxied}
            log(
                f"{name}: zipf {zipf['value']:,.0f} req/s, "
                f"{zipf['backend'] / zipf['requests']:.1%} to the backend; "
                f"hit {hit['value']:,.0f} req/s"
            )
        finally:
            procs.stop(proc)
    return out


def med(rounds: list[dict], target: str, test: str, key: str) -> float | None:
    vals = [r[target][test][key] for r in rounds if target in r and key in r[target][test]]
    return statistics.median(vals) if vals else None


def report(rounds: list[dict], counts: dict[str, int]) -> str:
    lines = [f"## Zipf workload (s = {ZIPF_S}), {OBJECTS:,} objects: {counts}", ""]
    lines += [
        "| proxy | req/s | p99 ms | proxy CPU | hit ratio | to backend | static to backend |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    summary = {}
    for target in ("l4lb", "nginx"):
        shares, statics = [], []
        for r in rounds:
            z = r[target]["zipf"]
            shares.append(z["backend"] / z["requests"])
            statics.append(z["backend_static"] / max(1, z.get("static", 0)))
        share, static = statistics.median(shares), statistics.median(statics)
        rate, p99 = med(rounds, target, "zipf", "value"), med(rounds, target, "zipf", "p99_ms")
        cpu = med(rounds, target, "zipf", "proxy_cpu") or 0.0
        summary[target] = (rate, p99, static)
        lines.append(
            f"| {target} | {rate:,.0f} | {p99:.2f} | {cpu:.0%} | {1 - share:.1%} | "
            f"{share:.1%} | {static:.1%} |"
        )
    lines += ["", f"## Hit path: one hot 2 KB object ({HOT})", ""]
    lines += ["| target | req/s | p99 ms | proxy CPU |", "|---|---:|---:|---:|"]
    for target in ("l4lb", "nginx", "l4lb-proxied"):
        rate, p99 = med(rounds, target, "hit", "value"), med(rounds, target, "hit", "p99_ms")
        cpu = med(rounds, target, "hit", "proxy_cpu") or 0.0
        summary[f"{target}-hit"] = (rate, p99, 0.0)
        lines.append(f"| {target} | {rate:,.0f} | {p99:.2f} | {cpu:.0%} |")
    l4, ng = summary["l4lb"], summary["nginx"]
    hit_ratio = summary["l4lb-hit"][0] / summary["nginx-hit"][0]
    over_proxied = summary["l4lb-hit"][0] / summary["l4lb-proxied-hit"][0]
    lines += [
        "",
        "## Ratios and targets",
        "",
        f"- Zipf req/s l4lb / nginx: {l4[0] / ng[0]:.2f}; p99 l4lb / nginx: {l4[1] / ng[1]:.2f}",
        f"- hit path req/s l4lb / nginx: {hit_ratio:.2f} (target >= 0.75: "
        f"{'met' if hit_ratio >= 0.75 else 'missed'}); l4lb hit / l4lb proxied: {over_proxied:.2f}",
        f"- l4lb: static share's backend load reduced by {1 - l4[2]:.1%} (target >= 80%: "
        f"{'met' if l4[2] <= 0.2 else 'missed'}); nginx: {1 - ng[2]:.1%}",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) > 1:
        print(__doc__)
        return 0 if sys.argv[1] in ("-h", "--help") else 2
    prepare_process()
    started = now_utc()
    header = [
        "# Cache benchmark (issue 12)",
        "",
        f"- date: {started:%Y-%m-%d %H:%M} UTC",
        f"- commit: {commit(('l4lb', 'l7'))}",
        f"- machine: {machine()}",
        l4lb_version(ssl=False),
        f"- nginx: {first_line(['nginx', '-v'])}; wrk: {first_line(['wrk', '-v'])}",
        f"- settings: {SECONDS}s per run after {WARMUP}s warm-up, {ROUNDS} rounds, "
        f"wrk -t1 -c{CONNS}, proxies on CPU {PROXY_CPU}, wrk and backend on CPU {LOAD_CPU}",
        "",
    ]
    log("\n".join(header[2:-1]))
    tmp = Path(tempfile.mkdtemp(prefix="cache-bench-", dir=os.environ.get("BENCH_TMPDIR")))
    procs = Procs(tmp, leader_only=True)
    try:
        www, objects = tmp / "www", tmp / "objects.txt"
        counts = make_site(www, objects)
        port_b = free_port()
        log_path = tmp / "backend.log"
        cfg = tmp / "backend.conf"
        cfg.write_text(backend_config(tmp, port_b, www, log_path))
        proc = start_nginx(procs, "backend", cfg, LOAD_CPU)
        wait_accepting(proc, port_b)
        backend = Backend(proc, log_path)
        rounds = []
        for i in range(ROUNDS):
            log(f"--- round {i + 1} of {ROUNDS}")
            rounds.append(one_round(procs, tmp, backend, port_b, objects))
    except KeyboardInterrupt:
        log("interrupted; stopping everything")
        return 130
    except RuntimeError as exc:  # a proxy that did not start, a wrk run with errors
        log(f"failed: {exc}")
        return 1
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    elapsed = (now_utc() - started).total_seconds()
    print("\n".join(header) + "\n" + report(rounds, counts) + f"\nRun time: {elapsed:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
