"""The HTTP benchmark (issue 4): requests per second and latency through l4lb's `http` listener,
beside nginx (`proxy_pass` to an `upstream` with `keepalive 32`), HAProxy (`mode http`),
Caddy (`reverse_proxy`), and direct to the backend, each proxy on one CPU.

Run it through `bench/run-http`, which installs the tools first. This file only measures.

- Requests per client connection are not limited anywhere (l4lb `max_requests` and nginx
  `keepalive_requests` raised to 10^7 and 10^6; HAProxy and Caddy have no limit): h2load
  does not reconnect in a timed run, so at 1,000 (their defaults) its clients stopped.
- Backend: a 1-worker nginx serving two static files, `small` (100 bytes) and `64k`
  (65,536 bytes), pinned to CPU 1 with the load generator. Proxies are pinned to CPU 0 and
  keep their connections to it alive. No access log anywhere.
- small: `wrk -t1 -c32 -d5s --latency` for `small` over keep-alive connections: req/s, p50, p99.
- 64k: the same for `64k`.
- fixed: `h2load --h1 -c32 --rps R/32 -D 5s` (rate-limited: R requests/s in all) with R = half
  of l4lb's median `small` rate from this run (BENCH_RATE overrides it); direct and every
  proxy at that same R; p50 and p99 from h2load's per-request log, and the difference from
  direct. wrk2 is not in Debian; h2load (nghttp2-client) is.
- Rounds are interleaved over the targets; the median is reported.
- Then l4lb is profiled with py-spy (`record --native -f raw`) under the `small` load, and
  the time is grouped: parsing (httptools/llhttp), the pipeline (l7/), transports and the
  loop (uvloop, libuv, asyncio), system calls, and the interpreter.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import common
from common import (
    ALLOC,
    LOAD_CPU,
    PROXY_CPU,
    ROOT,
    SYSCALLS,
    VENV,
    Proc,
    Procs,
    Runner,
    Targets,
    check_setup,
    disturbed_lines,
    env_float,
    env_int,
    env_list,
    first_line,
    fixed_rate_table,
    fmt,
    frame_name,
    frame_where,
    free_port,
    grouped,
    haproxy_config,
    l4lb_version,
    log,
    nginx_config,
    nginx_temp_paths,
    notes_lines,
    parse_h2load,
    py_spy_record,
    ratio,
    read_profile,
    rss_kb,
    rss_lines,
    run_bench,
    share_table,
    start_http_backend,
    start_nginx,
    start_targets,
    top_inclusive,
    top_self,
    wait_listening,
)

PROXIES = ("l4lb", "l4lb-compiled", "nginx", "haproxy", "caddy")
# l4lb-compiled: the same code with l7/ compiled by mypyc (setup.py), built by run-http with
# scripts/build-compiled into this copy of the tree.
COMPILED = ROOT / "build" / "compiled"
OURS = ("l4lb", "l4lb-compiled")
TARGETS = ("direct", *PROXIES)
TESTS = ("small", "64k", "fixed")

SECONDS = env_int("BENCH_SECONDS", 5)
ROUNDS = env_int("BENCH_ROUNDS", 3)
CONNS = env_int("BENCH_WRK_CONNS", 32)
RATE = env_float("BENCH_RATE", 0.0)
RUN_TARGETS = env_list("BENCH_TARGETS", TARGETS)
RUN_TESTS = env_list("BENCH_TESTS", TESTS)
PROFILE = os.environ.get("BENCH_PROFILE", "1") not in ("", "0")
TARGET_RATIO = 0.75  # issue 4: l4lb >= 75% of nginx's req/s
TARGET_ADDED_P99_MS = 2.0  # issue 4: p99 added over direct < 2 ms at half of l4lb's peak
FILES = {"small": "small", "64k": "64k"}


# -- configs ---------------------------------------------------------------------------------


def l4lb_config(port: int, backend: int) -> str:
    http = "\n[listener.bench.http]\nmax_requests = 10000000\n"
    return common.l4lb_config(port, backend, "http", workers=1, listener=http)


def nginx_proxy_config(tmp: Path, name: str, port: int, backend: int) -> str:
    return nginx_config(
        tmp,
        name,
        8192,
        f"""http {{
    access_log off;
{nginx_temp_paths(tmp, name)}
    keepalive_requests 1000000;
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
        }}
    }}
}}
""",
    )


def caddy_config(port: int, backend: int) -> str:
    return f"""{{
    admin off
    auto_https off
}}

http://127.0.0.1:{port} {{
    reverse_proxy 127.0.0.1:{backend}
}}
"""


# -- parsing the load generators' output -----------------------------------------------------


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise ValueError(f"latency {text!r}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[m.group(2)]
    return float(m.group(1)) * scale


def parse_wrk(stdout: str) -> dict:
    m = re.search(r"Requests/sec:\s+([\d.]+)", stdout)
    if not m:
        raise ValueError("no Requests/sec in wrk's output")
    out = {"value": float(m.group(1))}
    for pct in ("50", "99"):
        lat = re.search(rf"^\s+{pct}%\s+(\S+)", stdout, re.M)
        if not lat:
            raise ValueError(f"no {pct}% latency in wrk's output")
        out[f"p{pct}_ms"] = _ms(lat.group(1))
    avg = re.search(r"^\s+Latency\s+(\S+)", stdout, re.M)
    out["avg_ms"] = _ms(avg.group(1)) if avg else 0.0
    sock = re.search(r"Socket errors:([^\n]*)", stdout)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", stdout)
    out["errors"] = sock.group(1).strip() if sock else ""
    out["non2xx"] = int(non2xx.group(1)) if non2xx else 0
    reqs = re.search(r"(\d+) requests in", stdout)
    out["requests"] = int(reqs.group(1)) if reqs else 0
    return out


# -- the run ---------------------------------------------------------------------------------


class Bench:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs = Procs(tmp)
        # A smaller retry budget than the others' 60 s keeps a run near 5 minutes.
        self.runner = Runner(self.procs, ROUNDS, env_int("BENCH_RETRY_SECONDS", 30))
        self.notes = self.runner.notes
        self.results: dict[str, dict[str, dict]] = {}
        self.rate = RATE
        self.profile = ""
        self.rss: dict[str, dict[str, int]] = {}  # test -> target -> proxy RSS KB after it
        self.saturated: dict[str, dict] = {}  # h2load at full speed: target -> latencies

    def start_proxy(self, kind: str, backend: int) -> tuple[Proc, int]:
        port = free_port()
        name = kind
        if kind in OURS:
            cfg = self.tmp / f"{name}.toml"
            cfg.write_text(l4lb_config(port, backend))
            venv = VENV if kind == "l4lb" else COMPILED / ".venv" / "bin"
            argv = [str(venv / "l4lb"), "up", str(cfg), "--no-access-log", "--no-tui"]
            cwd = ROOT if kind == "l4lb" else COMPILED
            proc = self.procs.start(name, argv, PROXY_CPU, cwd=cwd)
        elif kind == "nginx":
            cfg = self.tmp / f"{name}.conf"
            cfg.write_text(nginx_proxy_config(self.tmp, name, port, backend))
            proc = start_nginx(self.procs, name, cfg, PROXY_CPU)
        elif kind == "haproxy":
            cfg = self.tmp / f"{name}.cfg"
            listen = "    timeout http-keep-alive 30s\n"
            cfg.write_text(haproxy_config(port, backend, "http", listen=listen))
            proc = self.procs.start(name, ["haproxy", "-db", "-f", str(cfg)], PROXY_CPU)
        elif kind == "caddy":
            cfg = self.tmp / "Caddyfile"
            cfg.write_text(caddy_config(port, backend))
            home = self.tmp / "caddy-home"
            home.mkdir(exist_ok=True)
            env = dict(
                os.environ,
                GOMAXPROCS="1",
                HOME=str(home),
                XDG_DATA_HOME=str(home / "data"),
                XDG_CONFIG_HOME=str(home / "config"),
            )
            argv = ["caddy", "run", "--config", str(cfg), "--adapter", "caddyfile"]
            proc = self.procs.start(name, argv, PROXY_CPU, env=env)
        else:
            raise ValueError(kind)
        wait_listening(proc, port)
        return proc, port

    def check_targets(self, targets: Targets) -> None:
        """One request through each target: a proxy that answers wrongly is left out."""
        for target, (_proc, port) in list(targets.items()):
            run = subprocess.run(
                [
                    "curl",
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code} %{size_download}",
                    "--max-time",
                    "5",
                    f"http://127.0.0.1:{port}/{FILES['small']}",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if run.stdout.strip() != "200 100":
                self.notes.append(
                    f"{target}: a test request got {run.stdout.strip() or run.stderr.strip()!r}"
                    " instead of 200 with 100 bytes; left out"
                )
                log(f"{target}: check failed: {run.stdout} {run.stderr}")
                del targets[target]

    def run(self) -> None:
        files = {
            FILES["small"]: b"l4lb bench: " + b"x" * 87 + b"\n",  # 100 bytes
            FILES["64k"]: bytes(range(256)) * 256,  # 65,536 bytes
        }
        backend, bport = start_http_backend(self.procs, self.tmp, LOAD_CPU, files)
        targets: Targets = {}
        try:
            start = self.start_proxy
            targets = start_targets(RUN_TARGETS, bport, lambda t: start(t, bport), self.notes)
            time.sleep(0.5)
            self.check_targets(targets)
            for test in RUN_TESTS:
                log(f"--- {test}")
                if test == "fixed":
                    self.fixed(targets, backend)
                else:
                    self.wrk_test(test, targets, backend)
                if test == "small":
                    self.saturated_latency(targets, backend)
                self.rss[test] = {
                    t: rss_kb(proc.pid) for t, (proc, _) in targets.items() if proc is not None
                }
            if PROFILE and "l4lb" in targets:
                proc, port = targets["l4lb"]
                assert proc is not None
                self.profile = self.profile_l4lb(proc, backend, port)
            self.runner.check_alive(targets, "end of run")
        finally:
            self.procs.stop_targets(targets)
            self.procs.stop(backend)

    # (a), (b): wrk, keep-alive, as fast as it goes

    def wrk(self, test: str, target: str, proc: Proc | None, backend: Proc, port: int, secs: int):
        argv = ["wrk", "-t1", f"-c{CONNS}", f"-d{secs}s", "--latency"]
        argv.append(f"http://127.0.0.1:{port}/{FILES[test]}")

        def parse(run: subprocess.CompletedProcess) -> dict:
            if run.returncode != 0:
                raise ValueError(f"exit {run.returncode}")
            out = parse_wrk(run.stdout)
            if (out["errors"] or out["non2xx"]) and secs == SECONDS:
                self.notes.append(
                    f"{test}: wrk through {target}: {out['non2xx']} non-2xx responses, "
                    f"socket errors: {out['errors'] or 'none'} (of {out['requests']} requests)"
                )
            return out

        return self.runner.run(test, target, proc, backend, argv, secs + 30, parse)

    def wrk_test(self, test: str, targets: Targets, backend: Proc) -> None:
        for target, (proc, port) in targets.items():  # warm up: 1 s each
            self.wrk(test, target, proc, backend, port, 1)
        self.results[test] = self.runner.series(
            test,
            "req/s",
            targets,
            lambda t, proc, port: self.wrk(test, t, proc, backend, port, SECONDS),
            fmt=lambda s: f"p50 {s['p50_ms']:.2f} ms, p99 {s['p99_ms']:.2f} ms",
        )
        for target, d in self.results[test].items():
            # At most CONNS requests are in flight, so mean latency <= CONNS / rate (Little's
            # law). wrk's latency histogram breaks that when the server stalls every
            # connection at once (reproduced with a toy server that sleeps 200 ms every
            # 5,000 requests): its latency figures for that target are then not trustworthy.
            if d and d.get("avg_ms", 0) / 1000 * d["median"] > 1.5 * CONNS:
                self.notes.append(
                    f"{test}: wrk's latency figures for {target} are inconsistent with its own "
                    f"rate: mean {d['avg_ms']:.1f} ms at {d['median']:,.0f} req/s would need "
                    f"{d['avg_ms'] / 1000 * d['median']:,.0f} requests in flight, and it "
                    f"keeps at most {CONNS}. Its p50/p99 for {target} are not reliable; "
                    "see the h2load cross-check"
                )

    def h2load(
        self, test: str, target: str, proc: Proc | None, backend: Proc, port: int, rps: float
    ) -> dict | None:
        """h2load --h1 over CONNS keep-alive connections for SECONDS (after 1 s of warm-up),
        at `rps` requests/s in all (0: as fast as it goes); latencies from its per-request
        log."""
        log_path = self.tmp / f"h2load-{time.monotonic_ns()}.log"
        argv = ["h2load", "--h1", "-c", str(CONNS)]
        if rps:
            argv += ["--rps", f"{rps / CONNS:.3f}"]
        argv += ["-D", str(SECONDS), "--warm-up-time", "1", "--log-file", str(log_path)]
        argv.append(f"http://127.0.0.1:{port}/{FILES['small']}")

        def parse(run: subprocess.CompletedProcess) -> dict:
            if run.returncode != 0:
                raise ValueError(f"exit {run.returncode}: {run.stderr.strip()[-200:]}")
            out = parse_h2load(log_path, run.stdout, SECONDS)
            if out["non200"] or out["failed"]:
                self.notes.append(
                    f"{test}: h2load through {target}: {out['non200']} non-200, "
                    f"{out['failed']} failed/errored/timed out"
                )
            if rps and out["rate"] < 0.95 * rps:
                self.notes.append(
                    f"{test}: {target} completed {out['rate']:,.0f} req/s of the {rps:,.0f} asked"
                )
            return out

        try:
            return self.runner.run(test, target, proc, backend, argv, SECONDS + 30, parse)
        finally:
            log_path.unlink(missing_ok=True)

    def saturated_latency(self, targets: Targets, backend: Proc) -> None:
        """A cross-check of wrk's latency figures for l4lb and nginx: one h2load run at full
        speed, with every request's time from h2load's log."""
        for target in ("l4lb", "l4lb-compiled", "nginx"):
            if target in targets:
                proc, port = targets[target]
                got = self.h2load("saturated", target, proc, backend, port, 0)
                if got:
                    self.saturated[target] = got
                    log(
                        f"saturated {target}: {got['rate']:,.0f} req/s, p50 "
                        f"{got['p50_ms']:.2f} ms, p99 {got['p99_ms']:.2f} ms, max "
                        f"{got['max_ms']:.1f} ms"
                    )

    # (c): h2load at a fixed rate

    def fixed(self, targets: Targets, backend: Proc) -> None:
        if not self.rate:
            peak = self.results.get("small", {}).get("l4lb", {}).get("median")
            if not peak:
                self.notes.append("fixed: no l4lb small-response rate to halve; set BENCH_RATE")
                return
            self.rate = round(peak / 2, -1)
        log(f"fixed rate: {self.rate:,.0f} req/s ({CONNS} connections)")

        def one(target: str, proc: Proc | None, port: int) -> dict | None:
            return self.h2load("fixed", target, proc, backend, port, self.rate)

        self.results["fixed"] = self.runner.series(
            "fixed",
            "ms p99",
            targets,
            one,
            fmt=lambda s: f"p50 {s['p50_ms']:.3f} ms, {s['rate']:,.0f} req/s",
        )

    # profile

    def profile_l4lb(self, proc: Proc, backend: Proc, port: int) -> str:
        out = self.tmp / "l4lb-http-profile.txt"
        argv = ["taskset", "-c", str(LOAD_CPU), "wrk", "-t1", f"-c{CONNS}"]
        argv += [f"-d{SECONDS + 2}s", f"http://127.0.0.1:{port}/{FILES['small']}"]
        load = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            time.sleep(1.0)
            rec = py_spy_record(proc.pid, SECONDS, out, rate=200)
            if rec is None:
                return "py-spy could not be installed"
            _, err = rec.communicate(timeout=SECONDS + 30)
            stdout, _ = load.communicate(timeout=SECONDS + 30)
        finally:
            if load.poll() is None:
                load.kill()
                load.wait()
        if rec.returncode != 0 or not out.exists():
            return f"py-spy failed ({rec.returncode}): {err.strip()[-500:]}"
        m = re.search(r"Requests/sec:\s+([\d.]+)", stdout or "")
        keep = os.environ.get("BENCH_PROFILE_OUT")
        if keep:
            shutil.copy(out, keep)
            log(f"profile (collapsed stacks) copied to {keep}")
        small = self.results.get("small", {}).get("l4lb", {})
        return summarize_http_profile(
            out, float(m.group(1)) if m else 0.0, small.get("per_core"), small.get("proxy_sys")
        )


# -- profile summary -------------------------------------------------------------------------

_LIBUV = frozenset(
    [
        "core.c",
        "linux.c",
        "stream.c",
        "uv-common.c",
        "tcp.c",
        "timer.c",
        "poll.c",
        "heap-inl.h",
        "async.c",
        "loop-watcher.c",
        "signal.c",
        "process.c",
        "udp.c",
    ]
)
_LLHTTP = frozenset(["llhttp.c", "api.c", "http.c", "parser.c", "url_parser.c"])
_GC = ("gc_collect", "collect_with_callback", "collect_generations")
_GC_CATEGORY = "CPython garbage collector (gc_collect_main and below)"
_PIPELINE = ("l7/exchange.py", "l7/h1.py", "l7/forwarded.py", "l7/router.py")


def frame_kind(frame: str) -> str:
    """What one frame is: syscall, alloc, interp (CPython itself), or a category."""
    name, where = frame_name(frame), frame_where(frame)
    file = where.rsplit(":", 1)[0] if ":" in where else where
    base = file.rsplit("/", 1)[-1]
    if "libc.so" in where:
        if name in SYSCALLS:
            return f"system calls: {name.lstrip('_').removeprefix('libc_')}"
        return "alloc" if name in ALLOC else "interp"
    if "httptools" in where or base in _LLHTTP:
        return "parsing: httptools (llhttp, C)"
    if file.startswith("l7/"):
        return f"pipeline: {file}" if file in _PIPELINE else f"pipeline, other: {file}"
    if file.startswith("l4lb/"):
        return f"l4lb: {file}"
    if base == "loop.c" or "uvloop" in where or base in _LIBUV:
        return "transports and loop: uvloop, libuv (C)"
    if base == "_asynciomodule.c" or file.startswith("asyncio/"):
        return "transports and loop: asyncio (Python and C)"
    if file.endswith(".py"):
        return f"other Python: {file}"
    return "interp"


def http_category(frames: list[str]) -> str:
    """The innermost frame decides, except that CPython's own frames (eval loop, objects,
    refcounts, GC, malloc) are charged to the code that ran them: the nearest frame above."""
    if any(frame_name(f).startswith(_GC) for f in frames):
        return _GC_CATEGORY
    for frame in reversed(frames):
        kind = frame_kind(frame)
        if kind not in ("interp", "alloc"):
            return kind
    return "CPython interpreter, outside any of these"


def interp_share(stacks: list[tuple[list[str], int]]) -> float:
    total = sum(n for _, n in stacks) or 1
    return sum(n for f, n in stacks if frame_kind(f[-1]) in ("interp", "alloc")) / total


def summarize_http_profile(
    path: Path, rps: float, per_core: float | None = None, kernel: float | None = None
) -> str:
    stacks = read_profile(path)
    total = sum(n for _, n in stacks)
    if not total:
        return "py-spy recorded no samples"
    groups = grouped(stacks, http_category)

    def family(cat: str) -> str:
        return cat.split(":", 1)[0].split(",", 1)[0].split(" (", 1)[0]

    families: dict[str, float] = {}
    for cat, share in groups:
        families[family(cat)] = families.get(family(cat), 0.0) + share

    def keep(frame: str) -> bool:
        return frame_where(frame).startswith(("l7/", "l4lb/"))

    no_gc = [(f, n) for f, n in stacks if http_category(f) != _GC_CATEGORY]

    estimate: list[str] = []
    if per_core and kernel is not None:
        estimate = [
            f"In the 100 B test l4lb used {1e6 / per_core:.0f} µs of CPU per request (user + "
            f"system time from /proc, {per_core:,.0f} req/s per CPU-second), {kernel:.0%} of "
            "it system time. The loopback network processing that its send calls set off is "
            "accounted by the kernel as softirq time of the CPU, not to l4lb, so py-spy, "
            "which sees the process inside those calls, puts a larger share in system calls.",
            "",
        ]
    lines = [
        *estimate,
        f"py-spy --native, {total} samples while l4lb was busy (wrk under the profiler: "
        f"{rps:,.0f} req/s; py-spy stops the process for each sample, so this is slower than "
        "unprofiled).",
        "",
        "Grouped. A sample with the garbage collector on its stack counts as GC. Otherwise it "
        "goes to its innermost frame, and time in CPython itself (eval loop, objects, "
        f"refcounts, malloc: {interp_share(stacks):.0%} of all samples, GC included) goes to "
        "the code that ran it. System calls count with the kernel time they take:",
        "",
        *share_table(sorted(families.items(), key=lambda kv: -kv[1]), "group"),
        "",
        *share_table(groups, "group: detail"),
        "",
        "Innermost frames:",
        "",
        *share_table(top_self(stacks, 20), "frame"),
        "",
        "Inclusive, l4lb's code (l7/, l4lb/), as a share of all samples, counting only the "
        "samples without the garbage collector (a collection runs inside whatever function "
        "allocated when it was due):",
        "",
        *share_table(
            [(f, v * sum(n for _, n in no_gc) / total) for f, v in top_inclusive(no_gc, keep, 20)],
            "function",
        ),
    ]
    return "\n".join(lines)


# -- report ----------------------------------------------------------------------------------


def render(bench: Bench) -> str:
    results, rate, notes, prof = bench.results, bench.rate, bench.notes, bench.profile
    out: list[str] = []
    wrk_tests = [t for t in ("small", "64k") if t in results]
    if wrk_tests:
        head = "| target |"
        sep = "|---|"
        for t in wrk_tests:
            label = "100 B" if t == "small" else "64 KB"
            head += (
                f" {label} req/s (min-max) | p50 / p99 ms | proxy CPU | of which kernel "
                "| req/s per proxy core |"
            )
            sep += "---:|---:|---:|---:|---:|"
        out += [head, sep]
        for target in RUN_TARGETS:
            row = f"| {target} |"
            for t in wrk_tests:
                d = results[t].get(target)
                if not d:
                    row += " failed | | | | |"
                    continue
                row += (
                    f" {d['median']:,.0f} ({d['min']:,.0f}-{d['max']:,.0f}) "
                    f"| {d['p50_ms']:.2f} / {d['p99_ms']:.2f} "
                    f"| {fmt(d.get('cpu'), '.0%')} | {fmt(d.get('proxy_sys'), '.0%')} "
                    f"| {fmt(d.get('per_core'), ',.0f')} |"
                )
            out.append(row)
        out.append("")
        if any(ours in RUN_TARGETS for ours in OURS):
            out += [
                "| l4lb / peer | "
                + " | ".join(
                    f"{'100 B' if t == 'small' else '64 KB'} req/s | per proxy core"
                    for t in wrk_tests
                )
                + " |",
                "|---|" + "---:|---:|" * len(wrk_tests),
            ]
            pairs = [
                (ours, peer)
                for ours in OURS
                for peer in ("nginx", "haproxy", "caddy", "direct")
                if ours in RUN_TARGETS and peer in RUN_TARGETS
            ]
            for ours, peer in pairs:
                cells = [
                    ratio(results[t].get(ours, {}).get(key), results[t].get(peer, {}).get(key))
                    for t in wrk_tests
                    for key in ("median", "per_core")
                ]
                out.append(f"| {ours} / {peer} | " + " | ".join(cells) + " |")
            out.append("")
    if bench.saturated:
        out += [
            f"Cross-check of the latency at full speed: h2load --h1 -c {CONNS} without a rate "
            "limit, 100 B, one run each; every request's time from h2load's log:",
            "",
            "| target | req/s | p50 ms | p99 ms | p99.9 ms | max ms |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for target, d in bench.saturated.items():
            out.append(
                f"| {target} | {d['rate']:,.0f} | {d['p50_ms']:.2f} | {d['p99_ms']:.2f} "
                f"| {d['p999_ms']:.2f} | {d['max_ms']:.1f} |"
            )
        out.append("")
    proxies = [t for t in RUN_TARGETS if t != "direct"]
    out += rss_lines("Proxy RSS (process tree) after each test, KB:", bench.rss, proxies)
    fixed = results.get("fixed")
    if fixed:
        out += [
            f"Fixed rate: {rate:,.0f} req/s (half of l4lb's 100 B peak), h2load --h1 "
            f"-c {CONNS}, 100 B responses:",
            "",
            *fixed_rate_table(fixed, RUN_TARGETS),
        ]
    out += ["Issue 4 targets:", ""]
    small = results.get("small", {})
    k64 = results.get("64k", {})
    for ours in OURS:
        if ours not in RUN_TARGETS:
            continue
        a, b = small.get(ours, {}).get("median"), small.get("nginx", {}).get("median")
        if a and b:
            verdict = "MET" if a >= TARGET_RATIO * b else "NOT MET"
            out.append(
                f"- {ours} >= 75% of nginx's req/s (100 B, keep-alive): {verdict} ({a / b:.2f})"
            )
        else:
            out.append(f"- {ours} >= 75% of nginx's req/s: not measured")
        a, b = k64.get(ours, {}).get("median"), k64.get("nginx", {}).get("median")
        if a and b:
            verdict = "met" if a >= TARGET_RATIO * b else "not met"
            out.append(f"- the same with 64 KB responses: {verdict} ({a / b:.2f})")
        if fixed and fixed.get(ours) and fixed.get("direct"):
            added = fixed[ours]["median"] - fixed["direct"]["median"]
            verdict = "MET" if added < TARGET_ADDED_P99_MS else "NOT MET"
            out.append(
                f"- {ours}: p99 added over direct < 2 ms at half of l4lb's peak: {verdict} "
                f"({added:+.3f} ms)"
            )
    out.append("")
    out += disturbed_lines(results) + notes_lines(dict.fromkeys(notes))
    if prof:
        out += ["l4lb profile under the 100 B keep-alive load:", "", prof, ""]
    return "\n".join(out)


def versions() -> str:
    return "\n".join(
        [
            l4lb_version(),
            f"- {first_line(['nginx', '-v'])}",
            f"- {first_line(['haproxy', '-v'])}",
            f"- caddy {first_line(['caddy', 'version'])}",
            f"- {first_line(['wrk', '--version'])}",
            f"- {first_line(['h2load', '--version'])}",
        ]
    )


def main() -> int:
    if len(sys.argv) >= 4 and sys.argv[1] == "profile":  # re-summarize BENCH_PROFILE_OUT
        extra = [float(x) for x in sys.argv[4:6]]  # per-core req/s, kernel share
        print(summarize_http_profile(Path(sys.argv[2]), float(sys.argv[3]), *extra))
        return 0
    check_setup("http", __doc__, ("taskset", "wrk", "h2load", "haproxy", "nginx", "caddy", "curl"))
    if "l4lb-compiled" in RUN_TARGETS and not (COMPILED / ".venv" / "bin" / "l4lb").exists():
        sys.exit("http: no compiled build; run scripts/build-compiled (bench/run-http does)")
    return run_bench(
        "HTTP benchmark",
        versions,
        f"BENCH_SECONDS={SECONDS} BENCH_ROUNDS={ROUNDS} BENCH_WRK_CONNS={CONNS}; "
        f"proxies on CPU {PROXY_CPU}, load generator and backend on CPU {LOAD_CPU}",
        Bench,
        lambda bench: [("", bench.run)],
        render,
        "http-",
        commit_paths=("l4lb", "l7"),
        json_keys=("results", "rate", "notes"),
    )


if __name__ == "__main__":
    sys.exit(main())
