"""The L4 benchmark: l4lb beside HAProxy (plain and splice) and nginx `stream`, one CPU each.

l4lb runs twice: `l4lb` is the pure build in .venv, `l4lb-compiled` the build `scripts/up`
runs (build/compiled, the TCP path compiled by mypyc), which is the one to quote.

Run it through `bench/run-l4`, which installs the tools first. This file only measures:

- bulk: `iperf3 -c ... -t SECONDS` through each proxy to an `iperf3 -s` backend; Gbit/s
  received, median of ROUNDS, and the proxy's CPU use (utime+stime over wall time).
- conn: `wrk -t1 -c32 -d SECONDS -H 'Connection: close'` through each proxy to a 1-worker
  nginx serving a 32-byte file: every request is a new TCP connection through the proxy.
- idle: IDLE_CONNS connections held open through a freshly started proxy to a backend that
  holds them (bench/idle.py); the proxy's RSS growth divided by the connections.

Proxies run pinned to CPU 0 (`taskset -c 0`); load generators and backends to CPU 1. Every
config is generated into a temp dir with free ports on 127.0.0.1; no access logs anywhere.
Every process started here is stopped on exit, on error and on SIGTERM/SIGINT/SIGHUP, and
gets PR_SET_PDEATHSIG so the kernel kills it if this script dies without cleaning up. Each
runs in its own process group, listed in $BENCH_PGID_FILE while it lives: bench/run-l4's trap
kills what is left of those groups (nginx workers outlive a killed master) if this dies.
"""

from __future__ import annotations

import collections
import json
import os
import re
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

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
    env_int,
    env_list,
    fd_count,
    first_line,
    fmt,
    free_port,
    haproxy_config,
    l4lb_config,
    l4lb_version,
    log,
    nginx_stream_config,
    notes_lines,
    py_spy_record,
    ratio,
    read_profile,
    rss_kb,
    run_bench,
    start_http_backend,
    start_targets,
    wait_listening,
    wrk_rate,
)

PROXIES = ("l4lb", "l4lb-compiled", "haproxy", "haproxy-splice", "nginx")
# l4lb-compiled: the build `scripts/up` runs (the TCP path compiled by mypyc, setup.py),
# made by run-l4 with scripts/build-compiled into build/compiled.
COMPILED = ROOT / "build" / "compiled"
OURS = ("l4lb", "l4lb-compiled")
TARGETS = ("direct", *PROXIES)
TESTS = ("bulk", "conn", "idle")

SECONDS = env_int("BENCH_SECONDS", 5)
ROUNDS = env_int("BENCH_ROUNDS", 3)
IDLE_CONNS = env_int("BENCH_IDLE_CONNS", 9000)
WRK_CONNS = env_int("BENCH_WRK_CONNS", 32)
RUN_TARGETS = env_list("BENCH_TARGETS", TARGETS)
RUN_TESTS = env_list("BENCH_TESTS", TESTS)
PROFILE = os.environ.get("BENCH_PROFILE", "") not in ("", "0")


# -- the run ---------------------------------------------------------------------------------


class Bench:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs = Procs(tmp)
        self.results: dict[str, dict[str, dict]] = {t: {} for t in TESTS}
        self.runner = Runner(self.procs, ROUNDS)
        self.notes: list[str] = self.runner.notes
        self.profile: str = ""

    # proxies

    def start_proxy(self, kind: str, backend: int, tag: str) -> tuple[Proc, int]:
        port = free_port()
        name = f"{kind}-{tag}"
        cwd = None
        if kind in OURS:
            cfg = self.tmp / f"{name}.toml"
            cfg.write_text(l4lb_config(port, backend, listener='idle_timeout = "10m"\n'))
            venv = VENV if kind == "l4lb" else COMPILED / ".venv" / "bin"
            argv = [str(venv / "l4lb"), "up", str(cfg), "--no-access-log", "--no-tui"]
            cwd = None if kind == "l4lb" else COMPILED
        elif kind in ("haproxy", "haproxy-splice"):
            splice = "splice-auto", "splice-request", "splice-response"
            cfg = self.tmp / f"{name}.cfg"
            # HAProxy sizes its fd limit from maxconn and maxpipes (2 fds each, plus a few) and
            # refuses to start above the hard limit (20,000 here): room for the idle test.
            cfg.write_text(
                haproxy_config(
                    port,
                    backend,
                    maxconn=IDLE_CONNS + 200,
                    timeout="10m",
                    global_="    maxpipes 256\n",
                    listen="".join(f"    option {o}\n" for o in splice)
                    if kind == "haproxy-splice"
                    else "",
                )
            )
            argv = ["haproxy", "-db", "-f", str(cfg)]
        elif kind == "nginx":
            cfg = self.tmp / f"{name}.conf"
            timeout = "        proxy_timeout 10m;\n"
            cfg.write_text(
                nginx_stream_config(self.tmp, name, port, backend, 19500, server=timeout)
            )
            argv = ["nginx", "-e", "stderr", "-p", str(self.tmp), "-c", str(cfg)]
        else:
            raise ValueError(kind)
        proc = self.procs.start(name, argv, PROXY_CPU, cwd=cwd)
        wait_listening(proc, port)
        return proc, port

    def start_proxies(self, backend: int, tag: str) -> Targets:
        start = self.start_proxy
        out = start_targets(RUN_TARGETS, backend, lambda t: start(t, backend, tag), self.notes, tag)
        time.sleep(0.5)
        return out

    # one sample: a client command run to completion, with CPU accounting around it
    # (bench/common.py: Runner.run), and rounds of them over every target (Runner.series)

    def _run(
        self,
        test: str,
        target: str,
        proc: Proc | None,
        backend: Proc,
        argv: list[str],
        timeout: float,
        parse: Callable[[subprocess.CompletedProcess], float],
    ) -> dict | None:
        return self.runner.run(test, target, proc, backend, argv, timeout, parse)

    def _series(
        self,
        test: str,
        unit: str,
        targets: Targets,
        sample: Callable[[str, Proc | None, int], dict | None],
    ) -> None:
        self.results[test].update(self.runner.series(test, unit, targets, sample))

    # (a) bulk throughput

    def bulk(self) -> None:
        port = free_port()
        server = self.procs.start(
            "iperf3-server", ["iperf3", "-s", "-B", "127.0.0.1", "-p", str(port)], LOAD_CPU
        )
        wait_listening(server, port)
        targets = self.start_proxies(port, "bulk")

        def parse(run: subprocess.CompletedProcess) -> float:
            data = json.loads(run.stdout)
            if "error" in data:
                raise ValueError(data["error"])
            return data["end"]["sum_received"]["bits_per_second"] / 1e9

        def sample(target: str, proc: Proc | None, tport: int) -> dict | None:
            argv = ["iperf3", "-c", "127.0.0.1", "-p", str(tport), "-t", str(SECONDS), "-J"]
            return self._run("bulk", target, proc, server, argv, SECONDS + 30, parse)

        try:
            self._series("bulk", "Gbit/s", targets, sample)
        finally:
            self.procs.stop_targets(targets)
            self.procs.stop(server)

    # (b) new connections per second

    def conn(self) -> None:
        backend, port = start_http_backend(self.procs, self.tmp, LOAD_CPU)
        targets = self.start_proxies(port, "conn")
        try:
            for target, (proc, tport) in targets.items():  # warm up: 1 s each
                self._wrk(target, proc, backend, tport, 1)
            self._series(
                "conn",
                "conn/s",
                targets,
                lambda target, proc, tport: self._wrk(target, proc, backend, tport, SECONDS),
            )
            profiled = next((t for t in OURS if t in targets), None)
            if PROFILE and profiled is not None:
                proc, tport = targets[profiled]
                assert proc is not None
                self.profile = self._profile(proc, backend, tport)
        finally:
            self.procs.stop_targets(targets)
            self.procs.stop(backend)

    def _wrk(
        self, target: str, proc: Proc | None, backend: Proc, port: int, seconds: int
    ) -> dict | None:
        argv = ["wrk", "-t1", f"-c{WRK_CONNS}", f"-d{seconds}s", "-H", "Connection: close"]
        argv.append(f"http://127.0.0.1:{port}/")

        def parse(run: subprocess.CompletedProcess) -> float:
            rate, errors = wrk_rate(run)
            if seconds == SECONDS:
                self.notes.extend(f"conn: wrk through {target}: {err}" for err in errors)
            return rate

        return self._run("conn", target, proc, backend, argv, seconds + 30, parse)

    def _profile(self, proc: Proc, backend: Proc, port: int) -> str:
        out = Path(os.environ.get("BENCH_PROFILE_OUT", "/tmp/l4lb-conn-profile.txt"))
        rec = py_spy_record(proc.pid, SECONDS + 1, out, rate=250, native=False)
        if rec is None:
            return "py-spy could not be installed"
        time.sleep(0.5)
        got = self._wrk("l4lb (profiled)", proc, backend, port, SECONDS)
        rps = got["value"] if got else None
        _, err = rec.communicate(timeout=SECONDS + 30)
        if rec.returncode != 0 or not out.exists():
            return f"py-spy failed ({rec.returncode}): {err.strip()[-500:]}"
        log(f"profile written to {out} (collapsed stacks); wrk under py-spy: {rps} conn/s")
        return summarize_profile(out, rps)

    # (c) memory per idle connection

    def idle(self) -> None:
        for target in RUN_TARGETS:
            if target == "direct":
                continue
            try:
                self.results["idle"][target] = self._idle_one(target)
            except RuntimeError as exc:
                self.notes.append(f"idle: {target}: {exc}")
                log(f"idle {target}: {exc}")

    def _idle_one(self, target: str) -> dict:
        port = free_port()
        holder = self.procs.start(
            "backend-hold",
            [sys.executable, str(ROOT / "bench" / "idle.py"), "hold", str(port)],
            LOAD_CPU,
        )
        proc = client = None
        try:
            wait_listening(holder, port)
            proc, pport = self.start_proxy(target, port, "idle")
            time.sleep(1.0)
            rss0, fds0 = rss_kb(proc.pid), fd_count(proc.pid)
            argv = [sys.executable, str(ROOT / "bench" / "idle.py"), "connect"]
            argv += [str(pport), str(IDLE_CONNS)]
            client = self.procs.start(
                "idle-client",
                argv,
                LOAD_CPU,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert client.popen.stdout is not None and client.popen.stdin is not None
            line = client.popen.stdout.readline()
            if not line:
                raise RuntimeError(f"the client exited: {client.stderr_tail()}")
            res = json.loads(line)
            time.sleep(1.0)
            rss1, fds1 = rss_kb(proc.pid), fd_count(proc.pid)
            if not proc.alive():
                raise RuntimeError(f"{target} exited: {proc.stderr_tail()}")
            n = res["established"]
            out = {
                "established": n,
                "failed": res["failed"],
                "errors": res["errors"],
                "connect_seconds": res["seconds"],
                "rss_before_kb": rss0,
                "rss_after_kb": rss1,
                "fds_before": fds0,
                "fds_after": fds1,
                "kb_per_conn": (rss1 - rss0) / n if n else None,
            }
            if res["failed"]:
                self.notes.append(
                    f"idle: {target}: {res['failed']} of {IDLE_CONNS} connections failed "
                    f"{res['errors']}"
                )
            log(
                f"idle {target}: {n} held in {res['seconds']}s, RSS {rss0} -> {rss1} KB, "
                f"fds {fds0} -> {fds1}" + (f", {out['kb_per_conn']:.2f} KB/conn" if n else "")
            )
            client.popen.stdin.write("done\n")
            client.popen.stdin.flush()
            client.popen.wait(30)
            return out
        finally:
            for p in (client, proc, holder):
                if p is not None:
                    self.procs.stop(p)


def summarize_profile(path: Path, rps: float | None, top: int = 15) -> str:
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for frames, n in read_profile(path):
        total += n
        own[frames[-1]] += n  # by line: the line names the call (a syscall) that took it
        for f in {re.sub(r":\d+\)$", ")", f) for f in frames}:
            incl[f] += n
    if not total:
        return "py-spy recorded no samples"
    lines = [
        f"py-spy, {total} samples while l4lb was busy (wrk under the profiler: "
        f"{rps or 0:,.0f} conn/s)",
        "",
        "| self % | function |",
        "|---:|---|",
    ]
    lines += [f"| {n / total:.1%} | `{f}` |" for f, n in own.most_common(top)]
    lines[2] = "| self % | function (file:line) |"
    lines += ["", "| total % | function |", "|---:|---|"]
    lines += [f"| {n / total:.1%} | `{f}` |" for f, n in incl.most_common(top)]
    return "\n".join(lines)


def render(bench: Bench) -> str:
    results, notes, profile = bench.results, bench.notes, bench.profile
    bulk, conn, idle = results["bulk"], results["conn"], results["idle"]
    direct = bulk.get("direct", {}).get("median")

    def med(d: dict, t: str) -> float | None:
        return d.get(t, {}).get("median")

    def kb(t: str) -> float | None:
        return idle.get(t, {}).get("kb_per_conn")

    def per_core(d: dict, t: str) -> float | None:
        return d.get(t, {}).get("per_core")

    rows = [
        "| target | bulk Gbit/s (min-max) | ratio to direct | proxy CPU | Gbit/s per proxy core "
        "| new conn/s (min-max) | proxy CPU | conn/s per proxy core | KB / idle conn |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t in RUN_TARGETS:
        b, c = bulk.get(t, {}), conn.get(t, {})
        to_direct = b["median"] / direct if b and direct else None
        rows.append(
            f"| {t} "
            f"| {fmt(b.get('median'), '.2f')} ({fmt(b.get('min'), '.1f')}-"
            f"{fmt(b.get('max'), '.1f')}) "
            f"| {fmt(to_direct, '.2f')} "
            f"| {fmt(b.get('cpu'), '.0%')} "
            f"| {fmt(per_core(bulk, t), '.1f')} "
            f"| {fmt(c.get('median'), ',.0f')} ({fmt(c.get('min'), ',.0f')}-"
            f"{fmt(c.get('max'), ',.0f')}) "
            f"| {fmt(c.get('cpu'), '.0%')} "
            f"| {fmt(per_core(conn, t), ',.0f')} "
            f"| {fmt(kb(t), '.1f')} |"
        )
    out = ["\n".join(rows), ""]
    for ours in (t for t in OURS if t in RUN_TARGETS):
        out += [
            f"| {ours} / peer | bulk | bulk per core | new conn/s | conn/s per core "
            "| KB / idle conn |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for peer in ("haproxy", "haproxy-splice", "nginx"):
            if peer not in RUN_TARGETS:
                continue
            cells = [
                ratio(med(bulk, ours), med(bulk, peer)),
                ratio(per_core(bulk, ours), per_core(bulk, peer)),
                ratio(med(conn, ours), med(conn, peer)),
                ratio(per_core(conn, ours), per_core(conn, peer)),
                ratio(kb(ours), kb(peer)),
            ]
            out.append(f"| {ours} / {peer} | " + " | ".join(cells) + " |")
        out.append("")
        out += [f"Issue 2 targets ({ours}):", ""]
        checks: list[tuple[str, float | None, float | None, Callable[[float, float], bool]]] = [
            (
                "bulk throughput >= HAProxy with splice-auto",
                med(bulk, ours),
                med(bulk, "haproxy-splice"),
                lambda a, b: a >= b,
            ),
            (
                "new connections/s >= 50% of HAProxy's",
                med(conn, ours),
                med(conn, "haproxy"),
                lambda a, b: a >= 0.5 * b,
            ),
            ("<= 20 KB per idle proxied connection", kb(ours), 20.0, lambda a, b: a <= b),
        ]
        for label, a, b, ok in checks:
            if a is None or b is None:
                out.append(f"- {label}: not measured")
                continue
            verdict = "MET" if ok(a, b) else "NOT MET"
            detail = f"{a:.1f} KB" if "KB" in label else f"{ours}/peer = {a / b:.2f}"
            out.append(f"- {label}: {verdict} ({detail})")
        out.append("")
    if idle:
        out += ["Idle test detail (proxy process tree, before -> with connections held):", ""]
        for t, d in idle.items():
            out.append(
                f"- {t}: {d['established']} held (failed {d['failed']}) in "
                f"{d['connect_seconds']}s; RSS {d['rss_before_kb']} -> {d['rss_after_kb']} KB; "
                f"fds {d['fds_before']} -> {d['fds_after']}"
            )
        out.append("")
    out += disturbed_lines(results) + notes_lines(notes)
    if profile:
        out += ["l4lb profile during the connection test:", "", profile, ""]
    return "\n".join(out)


def versions() -> str:
    return "\n".join(
        [
            l4lb_version(),
            f"- {first_line(['haproxy', '-v'])}",
            f"- {first_line(['nginx', '-v'])}",
            f"- {first_line(['iperf3', '--version'])}",
            f"- {first_line(['wrk', '--version'])}",
        ]
    )


def main() -> int:
    check_setup("l4", __doc__, ("taskset", "iperf3", "wrk", "haproxy", "nginx"))
    if "l4lb-compiled" in RUN_TARGETS and not (COMPILED / ".venv" / "bin" / "l4lb").exists():
        sys.exit("l4: no compiled build; run scripts/build-compiled (bench/run-l4 does)")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard < 2 * IDLE_CONNS + 200:
        log(f"warning: fd limit {hard} is low for {IDLE_CONNS} idle connections")
    return run_bench(
        "L4 benchmark",
        versions,
        f"BENCH_SECONDS={SECONDS} BENCH_ROUNDS={ROUNDS} BENCH_IDLE_CONNS={IDLE_CONNS} "
        f"BENCH_WRK_CONNS={WRK_CONNS}; proxies on CPU {PROXY_CPU}, load and backends on CPU "
        f"{LOAD_CPU}",
        Bench,
        lambda bench: [(test, getattr(bench, test)) for test in RUN_TESTS],
        render,
        "l4bench-",
    )


if __name__ == "__main__":
    sys.exit(main())
