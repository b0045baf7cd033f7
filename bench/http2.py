"""The HTTP/2 benchmark (issue 10): requests per second and latency over TLS through l4lb's
`https` listener (ALPN h2), beside nginx (`listen ... ssl http2`), HAProxy (`bind ... ssl
alpn h2,http/1.1`, `mode http`), Caddy (`reverse_proxy`, `tls`), and direct to the backend
(which serves https and h2 itself), each proxy on one CPU; and the same over HTTP/1.1 on TLS.

Run it through `bench/run-h2`, which installs the tools first. This file only measures.

- Backend: a 1-worker nginx serving `small` (100 bytes) and `64k` (65,536 bytes), pinned to
  CPU 1 with the load generator, on two ports: plain HTTP/1.1 for the proxies (each keeps
  its server connections alive) and https with h2 for `direct`. No access log anywhere.
- Every listener terminates TLS with the same self-signed EC P-256 certificate, made with
  `l4lb cert selfsigned`. Every proxy forwards over HTTP/1.1 with keep-alive and keeps up
  to 256 idle server connections (l4lb `max_idle`, nginx `keepalive`, Caddy
  `keepalive_idle_conns_per_host`; HAProxy has no limit), more than the 160 requests in
  flight, so none of them closes and reopens server connections between bursts. Requests
  per client connection are not limited (h2load does not reconnect in a timed run).
- h2-small, h2-64k: `h2load -c16 -m10 -D5 --warm-up-time 1` over TLS (ALPN h2): req/s from
  h2load, p50/p99 from its per-request log, the proxy's CPU use.
- h1-small, h1-64k: the same with `--h1` (ALPN http/1.1, one request at a time on each of
  the 16 connections): no HTTP/1.1 regression behind the HTTP/2 work.
- fixed: `h2load -c16 -m10 --rps R/16` (R requests/s in all) over h2 with R = half of
  l4lb's median h2-small rate from this run (BENCH_RATE overrides it); direct and every
  proxy at that same R; p50/p99/p99.9 and the latency added over direct.
- Rounds are interleaved over the targets; the median is reported.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import common
from common import (
    LOAD_CPU,
    PROXY_CPU,
    ROOT,
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
    free_port,
    haproxy_config,
    l4lb_version,
    log,
    nginx_config,
    nginx_temp_paths,
    notes_lines,
    parse_h2load,
    ratio,
    rss_kb,
    rss_lines,
    run_bench,
    start_nginx,
    start_targets,
    wait_listening,
)

PROXIES = ("l4lb", "l4lb-compiled", "nginx", "haproxy", "caddy")
# l4lb-compiled: l7/'s hot path compiled by mypyc, built by run-h2 when asked for.
COMPILED = ROOT / "build" / "compiled"
OURS = ("l4lb", "l4lb-compiled")
TARGETS = ("direct", *PROXIES)
TESTS = ("h2-small", "h2-64k", "h1-small", "h1-64k", "fixed")
PEERS = ("nginx", "haproxy", "caddy", "direct")

SECONDS = env_int("BENCH_SECONDS", 5)
ROUNDS = env_int("BENCH_ROUNDS", 3)
CONNS = env_int("BENCH_H2_CONNS", 16)
STREAMS = env_int("BENCH_H2_STREAMS", 10)
RATE = env_float("BENCH_RATE", 0.0)
RUN_TARGETS = env_list("BENCH_TARGETS", TARGETS, ("direct", "l4lb", "nginx", "haproxy", "caddy"))
RUN_TESTS = env_list("BENCH_TESTS", TESTS)
IDLE = 256  # idle server connections each proxy keeps (> CONNS * STREAMS in flight)
TARGET_RATIO = 0.5  # issue 10: l4lb's h2 req/s >= 0.5x nginx's
TARGET_ADDED_P99_MS = 5.0  # issue 10: p99 added over direct < 5 ms at half of l4lb's peak
FILES = {"small": b"l4lb bench: " + b"x" * 87 + b"\n", "64k": bytes(range(256)) * 256}


def size_of(test: str) -> str:
    return test.split("-", 1)[1] if "-" in test else "small"


def label(test: str) -> str:
    return "100 B" if size_of(test) == "small" else "64 KB"


# -- configs ---------------------------------------------------------------------------------


def l4lb_config(port: int, backend: int, cert: Path, key: Path) -> str:
    listener = (
        f'\n[[listener.bench.certs]]\ncert = "{cert}"\nkey = "{key}"\n'
        "\n[listener.bench.http]\nmax_requests = 10000000\n"
    )
    base = common.l4lb_config(port, backend, "https", workers=1, listener=listener)
    return base + f"\n[pool.bench.http]\nmax_idle = {IDLE}\n"


def tls_lines(cert: Path, key: Path) -> str:
    return f"""        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:SSL:10m;
"""


def nginx_backend_config(tmp: Path, port: int, tls_port: int, root: Path, cert, key) -> str:
    """The backend: `root` over plain HTTP/1.1 on `port` (for the proxies) and over https
    with h2 on `tls_port` (direct). `listen ... ssl http2`: Debian 12's nginx 1.22 has no
    `http2 on;` (1.25.1)."""
    name = "backend-h2"
    return nginx_config(
        tmp,
        name,
        4096,
        f"""http {{
    access_log off;
{nginx_temp_paths(tmp, name)}
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        listen 127.0.0.1:{tls_port} ssl http2 backlog=4096;
{tls_lines(cert, key)}        root {root};
        location / {{ }}
    }}
}}
""",
    )


def nginx_proxy_config(tmp: Path, name: str, port: int, backend: int, cert, key) -> str:
    return nginx_config(
        tmp,
        name,
        8192,
        f"""http {{
    access_log off;
{nginx_temp_paths(tmp, name)}
    keepalive_requests 10000000;
    upstream backend {{
        server 127.0.0.1:{backend};
        keepalive {IDLE};
        keepalive_requests 10000000;
    }}
    server {{
        listen 127.0.0.1:{port} ssl http2 backlog=4096;
{tls_lines(cert, key)}        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
""",
    )


def caddy_config(port: int, backend: int, cert: Path, key: Path) -> str:
    return f"""{{
    admin off
    auto_https off
    servers {{
        protocols h1 h2
    }}
}}

https://127.0.0.1:{port} {{
    tls {cert} {key}
    reverse_proxy 127.0.0.1:{backend} {{
        transport http {{
            keepalive_idle_conns_per_host {IDLE}
        }}
    }}
}}
"""


# -- the run ---------------------------------------------------------------------------------


class Bench:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs = Procs(tmp)
        self.runner = Runner(self.procs, ROUNDS, env_int("BENCH_RETRY_SECONDS", 30))
        self.notes = self.runner.notes
        self.results: dict[str, dict[str, dict]] = {}
        self.rate = RATE
        self.rss: dict[str, dict[str, int]] = {}  # test -> target -> proxy RSS KB after it
        self.cert = tmp / "bench.crt"
        self.key = tmp / "bench.key"
        self.pem = tmp / "bench.pem"  # HAProxy: certificate and key in one file

    def make_cert(self) -> None:
        argv = [str(VENV / "l4lb"), "cert", "selfsigned", "--cert", str(self.cert)]
        run = subprocess.run(
            [*argv, "--key", str(self.key), "--name", "localhost"],
            capture_output=True,
            text=True,
            check=False,
        )
        if run.returncode != 0:
            raise RuntimeError(f"l4lb cert selfsigned failed: {run.stderr.strip()[-300:]}")
        self.pem.write_bytes(self.cert.read_bytes() + self.key.read_bytes())

    def start_backend(self) -> tuple[Proc, int, int]:
        port, tls_port = free_port(), free_port()
        www = self.tmp / "www"
        www.mkdir(exist_ok=True)
        for name, body in FILES.items():
            (www / name).write_bytes(body)
        cfg = self.tmp / "backend-h2.conf"
        cfg.write_text(nginx_backend_config(self.tmp, port, tls_port, www, self.cert, self.key))
        backend = start_nginx(self.procs, "backend-h2", cfg, LOAD_CPU)
        wait_listening(backend, port)
        wait_listening(backend, tls_port)
        return backend, port, tls_port

    def start_proxy(self, kind: str, backend: int) -> tuple[Proc, int]:
        port = free_port()
        if kind in OURS:
            cfg = self.tmp / f"{kind}.toml"
            cfg.write_text(l4lb_config(port, backend, self.cert, self.key))
            venv = VENV if kind == "l4lb" else COMPILED / ".venv" / "bin"
            argv = [str(venv / "l4lb"), "up", str(cfg), "--no-access-log", "--no-tui"]
            cwd = ROOT if kind == "l4lb" else COMPILED
            proc = self.procs.start(kind, argv, PROXY_CPU, cwd=cwd)
        elif kind == "nginx":
            cfg = self.tmp / f"{kind}.conf"
            cfg.write_text(nginx_proxy_config(self.tmp, kind, port, backend, self.cert, self.key))
            proc = start_nginx(self.procs, kind, cfg, PROXY_CPU)
        elif kind == "haproxy":
            cfg = self.tmp / f"{kind}.cfg"
            bind = f" ssl crt {self.pem} alpn h2,http/1.1"
            listen = "    timeout http-keep-alive 30s\n"
            cfg.write_text(haproxy_config(port, backend, "http", bind=bind, listen=listen))
            proc = self.procs.start(kind, ["haproxy", "-db", "-f", str(cfg)], PROXY_CPU)
        elif kind == "caddy":
            cfg = self.tmp / "Caddyfile"
            cfg.write_text(caddy_config(port, backend, self.cert, self.key))
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
            proc = self.procs.start(kind, argv, PROXY_CPU, env=env)
        else:
            raise ValueError(kind)
        wait_listening(proc, port)
        return proc, port

    def check_targets(self, targets: Targets) -> None:
        """One request over h2 and one over HTTP/1.1 through each target: one that answers
        wrongly, or does not negotiate the protocol asked for, is left out."""
        curl = ["curl", "-sk", "-o", "/dev/null", "--max-time", "5"]
        curl += ["-w", "%{http_code} %{size_download} %{http_version}"]
        for target, (_proc, port) in list(targets.items()):
            for flag, version in (("--http2", "2"), ("--http1.1", "1.1")):
                run = subprocess.run(
                    [*curl, flag, f"https://127.0.0.1:{port}/small"],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if run.stdout.strip() != f"200 100 {version}":
                    got = run.stdout.strip() or run.stderr.strip()
                    self.notes.append(
                        f"{target}: a test request ({flag}) got {got!r} instead of "
                        f"'200 100 {version}' (status, bytes, HTTP version); left out"
                    )
                    log(f"{target}: check failed: {run.stdout} {run.stderr}")
                    del targets[target]
                    break

    def run(self) -> None:
        self.make_cert()
        backend, bport, tls_port = self.start_backend()
        targets: Targets = {}
        try:
            start = self.start_proxy
            targets = start_targets(RUN_TARGETS, tls_port, lambda t: start(t, bport), self.notes)
            time.sleep(0.5)
            self.check_targets(targets)
            for test in RUN_TESTS:
                log(f"--- {test}")
                if test == "fixed":
                    self.fixed(targets, backend)
                else:
                    self.peak(test, targets, backend)
                self.rss[test] = {
                    t: rss_kb(proc.pid) for t, (proc, _) in targets.items() if proc is not None
                }
            self.runner.check_alive(targets, "end of run")
        finally:
            self.procs.stop_targets(targets)
            self.procs.stop(backend)

    def h2load(
        self, test: str, target: str, proc: Proc | None, backend: Proc, port: int, rps: float
    ) -> dict | None:
        """h2load over TLS for SECONDS after 1 s of warm-up: h2 with CONNS x STREAMS, or
        (h1-*) HTTP/1.1 over CONNS connections; at `rps` requests/s in all (0: as fast as it
        goes). The rate from h2load's summary, latencies from its per-request log."""
        log_path = self.tmp / f"h2load-{time.monotonic_ns()}.log"
        argv = ["h2load", "-c", str(CONNS)]
        argv += ["--h1"] if test.startswith("h1") else ["-m", str(STREAMS)]
        if rps:
            argv += ["--rps", f"{rps / CONNS:.3f}"]
        argv += ["-D", str(SECONDS), "--warm-up-time", "1", "--log-file", str(log_path)]
        argv.append(f"https://127.0.0.1:{port}/{size_of(test)}")

        def parse(run: subprocess.CompletedProcess) -> dict:
            if run.returncode != 0:
                raise ValueError(f"exit {run.returncode}: {run.stderr.strip()[-200:]}")
            out = parse_h2load(log_path, run.stdout, SECONDS)
            m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", run.stdout)
            if not m:
                raise ValueError("no req/s in h2load's output")
            proto = re.search(r"Application protocol: (\S+)", run.stdout)
            want = "http/1.1" if test.startswith("h1") else "h2"
            if not proto or proto.group(1) != want:
                raise ValueError(f"negotiated {proto.group(1) if proto else 'nothing'}, not {want}")
            out["rate"] = float(m.group(1))
            tls = re.search(r"TLS Protocol: (\S+)\s+Cipher: (\S+)", run.stdout)
            out["tls"] = f"{tls.group(1)} {tls.group(2)}" if tls else "?"
            if not rps:
                out["value"] = out["rate"]
            if out["non200"] or out["failed"]:
                codes = re.search(r"status codes: ([^\n]*)", run.stdout)
                self.notes.append(
                    f"{test}: h2load through {target}: {out['non200']} non-200, "
                    f"{out['failed']} failed/errored/timed out"
                    + (f" (logged: {out['statuses']})" if out["statuses"] else "")
                    + (f"; h2load's status codes: {codes.group(1).strip()}" if codes else "")
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

    def peak(self, test: str, targets: Targets, backend: Proc) -> None:
        self.results[test] = self.runner.series(
            test,
            "req/s",
            targets,
            lambda t, proc, port: self.h2load(test, t, proc, backend, port, 0),
            fmt=lambda s: f"p50 {s['p50_ms']:.2f} ms, p99 {s['p99_ms']:.2f} ms",
        )

    def fixed(self, targets: Targets, backend: Proc) -> None:
        if not self.rate:
            small = self.results.get("h2-small", {})
            # the pure build's peak when both builds ran (the lower one), else the one that did
            peak = (small.get("l4lb") or small.get("l4lb-compiled") or {}).get("median")
            if not peak:
                self.notes.append("fixed: no l4lb h2-small rate to halve; set BENCH_RATE")
                return
            self.rate = round(peak / 2, -1)
        log(f"fixed rate: {self.rate:,.0f} req/s (h2, {CONNS} connections)")
        self.results["fixed"] = self.runner.series(
            "fixed",
            "ms p99",
            targets,
            lambda t, proc, port: self.h2load("fixed", t, proc, backend, port, self.rate),
            fmt=lambda s: f"p50 {s['p50_ms']:.3f} ms, {s['rate']:,.0f} req/s",
        )


# -- report ----------------------------------------------------------------------------------


def peak_table(results: dict[str, dict[str, dict]], tests: list[str]) -> list[str]:
    head, sep = "| target |", "|---|"
    for t in tests:
        head += f" {label(t)} req/s (min-max) | p50 / p99 ms | proxy CPU | req/s per proxy core |"
        sep += "---:|---:|---:|---:|"
    out = [head, sep]
    for target in RUN_TARGETS:
        row = f"| {target} |"
        for t in tests:
            d = results[t].get(target)
            if not d:
                row += " failed | | | |"
                continue
            row += (
                f" {d['median']:,.0f} ({d['min']:,.0f}-{d['max']:,.0f}) "
                f"| {d['p50_ms']:.2f} / {d['p99_ms']:.2f} "
                f"| {fmt(d.get('cpu'), '.0%')} | {fmt(d.get('per_core'), ',.0f')} |"
            )
        out.append(row)
    return [*out, ""]


def ratio_table(results: dict[str, dict[str, dict]], tests: list[str]) -> list[str]:
    names = {"h2-small": "h2 100 B", "h2-64k": "h2 64 KB", "h1-small": "h1 100 B"}
    names["h1-64k"] = "h1 64 KB"
    out = [
        "| l4lb / peer | " + " | ".join(f"{names[t]} req/s | per core" for t in tests) + " |",
        "|---|" + "---:|---:|" * len(tests),
    ]
    for ours in OURS:
        for peer in PEERS:
            if ours not in RUN_TARGETS or peer not in RUN_TARGETS:
                continue
            cells = [
                ratio(results[t].get(ours, {}).get(key), results[t].get(peer, {}).get(key))
                for t in tests
                for key in ("median", "per_core")
            ]
            out.append(f"| {ours} / {peer} | " + " | ".join(cells) + " |")
    return [*out, ""]


def render(bench: Bench) -> str:
    results, notes = bench.results, bench.notes
    out: list[str] = []
    settings = f"h2load -c {CONNS} over TLS"
    for proto, intro in (
        ("h2", f"HTTP/2 (ALPN h2), {settings} -m {STREAMS}, as fast as it goes:"),
        ("h1", f"HTTP/1.1 on TLS (ALPN http/1.1), {settings} --h1, as fast as it goes:"),
    ):
        tests = [t for t in (f"{proto}-small", f"{proto}-64k") if t in results]
        if tests:
            out += [intro, "", *peak_table(results, tests)]
    peaks = [t for t in TESTS if t != "fixed" and t in results]
    if peaks and any(ours in RUN_TARGETS for ours in OURS):
        out += [
            "Ratios (l4lb's figure over the peer's, same run):",
            "",
            *ratio_table(results, peaks),
        ]
    proxies = [t for t in RUN_TARGETS if t != "direct"]
    out += rss_lines("Proxy RSS (process tree) after each test, KB:", bench.rss, proxies)
    fixed = results.get("fixed")
    if fixed:
        out += [
            f"Fixed rate: {bench.rate:,.0f} req/s (half of l4lb's h2 100 B peak), h2load "
            f"-c {CONNS} -m {STREAMS} --rps over h2, 100 B responses:",
            "",
            *fixed_rate_table(fixed, RUN_TARGETS),
        ]
    out += ["Issue 10 targets:", ""]
    for ours in OURS:
        if ours not in RUN_TARGETS:
            continue
        for test, what in (("h2-small", "100 B"), ("h2-64k", "64 KB")):
            a = results.get(test, {}).get(ours, {}).get("median")
            b = results.get(test, {}).get("nginx", {}).get("median")
            if a and b:
                verdict = "MET" if a >= TARGET_RATIO * b else "NOT MET"
                out.append(f"- {ours} h2 req/s >= 0.5x nginx's ({what}): {verdict} ({a / b:.2f})")
            else:
                out.append(f"- {ours} h2 req/s >= 0.5x nginx's ({what}): not measured")
        if fixed and fixed.get(ours) and fixed.get("direct"):
            added = fixed[ours]["median"] - fixed["direct"]["median"]
            verdict = "MET" if added < TARGET_ADDED_P99_MS else "NOT MET"
            out.append(
                f"- {ours}: p99 added over direct < 5 ms at half of l4lb's h2 peak: {verdict} "
                f"({added:+.3f} ms)"
            )
        for test, what in (("h1-small", "100 B"), ("h1-64k", "64 KB")):
            a = results.get(test, {}).get(ours, {}).get("median")
            b = results.get(test, {}).get("nginx", {}).get("median")
            if a and b:
                out.append(
                    f"- {ours} HTTP/1.1 on TLS ({what}): {a / b:.2f}x nginx's req/s (compare "
                    "with the HTTP benchmark's ratio in RESULTS.md for a regression)"
                )
    out.append("")
    tls = {t: d.get("tls") for r in results.values() for t, d in r.items() if d.get("tls")}
    if tls:
        out += ["TLS negotiated by h2load: " + "; ".join(f"{t} {v}" for t, v in tls.items()), ""]
    out += disturbed_lines(results) + notes_lines(dict.fromkeys(notes))
    return "\n".join(out)


def versions() -> str:
    return "\n".join(
        [
            l4lb_version(),
            f"- {first_line(['nginx', '-v'])}",
            f"- {first_line(['haproxy', '-v'])}",
            f"- caddy {first_line(['caddy', 'version'])}",
            f"- {first_line(['h2load', '--version'])}",
        ]
    )


def main() -> int:
    check_setup("h2", __doc__, ("taskset", "h2load", "haproxy", "nginx", "caddy", "curl"))
    if "l4lb-compiled" in RUN_TARGETS and not (COMPILED / ".venv" / "bin" / "l4lb").exists():
        sys.exit("h2: no compiled build; run scripts/build-compiled (bench/run-h2 does)")
    return run_bench(
        "HTTP/2 benchmark",
        versions,
        f"BENCH_SECONDS={SECONDS} BENCH_ROUNDS={ROUNDS} BENCH_H2_CONNS={CONNS} "
        f"BENCH_H2_STREAMS={STREAMS}; proxies on CPU {PROXY_CPU}, load generator and backend "
        f"on CPU {LOAD_CPU}",
        Bench,
        lambda bench: [("", bench.run)],
        render,
        "h2-",
        commit_paths=("l4lb", "l7"),
        json_keys=("results", "rate", "notes"),
    )


if __name__ == "__main__":
    sys.exit(main())
