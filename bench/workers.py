"""Multi-core scaling (issue 5): l4lb `workers = 1` and `2` against HAProxy `nbthread 1` and
`2`, in `tcp` mode, on the whole machine (nothing pinned: the point is using every core).

Run it through `bench/run-workers`, which installs the tools first. This file only measures:

- conn: `wrk -t1 -c32 -H 'Connection: close'` through each proxy to a 1-worker nginx serving
  a 32-byte file. Every request is a new TCP connection through the proxy (as bench/l4.py).
- keepalive: the same wrk without `Connection: close`: 32 long-lived connections through the
  proxy, each carrying one small request and response after another (nginx keeps them open
  for 1,000,000 requests, so nothing reconnects during a run).
- bulk: `iperf3 -c ... -P 4` through each proxy to an `iperf3 -s` backend: 4 parallel streams
  (plus iperf3's control connection), so that several connections can go to several workers.

For every sample it records the proxy's CPU time (utime+stime summed over its processes, or
its threads: the l4lb supervisor and its workers, HAProxy's process), the CPU time of the
load generator and backend, and how busy the machine was in all (user, system, irq and
softirq over every CPU). The figure per proxy CPU-second is the rate divided by the proxy's
CPU use. How the proxy's CPU time divides between its workers (l4lb) or threads (HAProxy)
is reported too: the kernel spreads connections over SO_REUSEPORT sockets by a hash, not by
load.

A sample counts as disturbed when processes outside this run (not the proxy, backend, client,
this script, or kernel threads) used more than 10% of a CPU over it: the machine's busy time
in /proc/stat less what this run's processes and the kernel threads used. A disturbed sample
is run again, up to BENCH_RETRIES times within BENCH_RETRY_SECONDS for the whole run.

Every config is generated into a temp dir with free ports on 127.0.0.1; no access logs.
Every process started here runs in its own process group (listed in $BENCH_PGID_FILE for
bench/run-workers' trap), gets PR_SET_PDEATHSIG, and is stopped on exit, error and signals.
"""

from __future__ import annotations

import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from common import (
    CLK_TCK,
    DISTURBED,
    RETRIES,
    VENV,
    Proc,
    Procs,
    Targets,
    _rusage,
    check_setup,
    child_setup,
    disturbed_lines,
    env_int,
    env_list,
    first_line,
    fmt,
    free_port,
    haproxy_config,
    l4lb_config,
    l4lb_version,
    log,
    notes_lines,
    ratio,
    run_bench,
    start_http_backend,
    start_targets,
    wait_listening,
    wrk_rate,
)

PF_KTHREAD = 0x00200000

TARGETS = ("direct", "l4lb-w1", "l4lb-w2", "haproxy-nbt1", "haproxy-nbt2")
TESTS = ("conn", "keepalive", "bulk")
UNITS = {"conn": "conn/s", "keepalive": "req/s", "bulk": "Gbit/s"}


SECONDS = env_int("BENCH_SECONDS", 5)
ROUNDS = env_int("BENCH_ROUNDS", 3)
WRK_CONNS = env_int("BENCH_WRK_CONNS", 32)
STREAMS = env_int("BENCH_STREAMS", 4)
RUN_TARGETS = env_list("BENCH_TARGETS", TARGETS)
RUN_TESTS = env_list("BENCH_TESTS", TESTS)
RETRY_SECONDS = env_int("BENCH_RETRY_SECONDS", 40)


# -- CPU accounting --------------------------------------------------------------------------


@dataclass
class Snapshot:
    """Every process's ppid, CPU seconds and whether it is a kernel thread, at one moment."""

    t: float
    busy: float  # machine: user+nice+system, seconds summed over CPUs
    busy_all: float  # machine: the same plus irq and softirq
    procs: dict[int, tuple[int, float, bool]] = field(default_factory=dict)

    @classmethod
    def take(cls) -> Snapshot:
        t = time.monotonic()
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[:7])
        snap = cls(
            t, (user + nice + system) / CLK_TCK, (user + nice + system + irq + softirq) / CLK_TCK
        )
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            f = stat.rsplit(")", 1)[1].split()
            snap.procs[int(entry)] = (
                int(f[1]),
                (int(f[11]) + int(f[12])) / CLK_TCK,
                bool(int(f[6]) & PF_KTHREAD),
            )
        return snap

    def tree(self, pid: int) -> list[int]:
        """`pid` and its descendants (the l4lb supervisor and workers, nginx master and worker)."""
        children: dict[int, list[int]] = {}
        for p, (ppid, _, _) in self.procs.items():
            children.setdefault(ppid, []).append(p)
        out, todo = [], [pid]
        while todo:
            p = todo.pop()
            if p in self.procs:
                out.append(p)
                todo.extend(children.get(p, ()))
        return out

    def cpu(self, pids: list[int]) -> float:
        return sum(self.procs[p][1] for p in pids if p in self.procs)


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of `pid` (HAProxy's nbthread threads)."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            f = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(tid)] = (int(f[11]) + int(f[12])) / CLK_TCK
    return out


def worker_pids(proc: Proc | None) -> list[int]:
    """The worker processes of an l4lb supervisor (none for anything else)."""
    if proc is None:
        return []
    snap = Snapshot.take()
    return sorted(p for p, (ppid, _, _) in snap.procs.items() if ppid == proc.pid)


def socket_count(pid: int) -> int:
    n = 0
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return 0
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                n += 1
        except OSError:
            pass
    return n


def sockets(ports: tuple[int, ...]) -> list[str]:
    """`ss` lines for the TCP sockets on these ports (either end), with their processes."""
    if not ports:
        return []
    filt = " or ".join(f"sport = :{p} or dport = :{p}" for p in ports)
    try:
        run = subprocess.run(
            ["ss", "-tanpi", filt], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [f"ss failed: {exc}"]
    lines, cur = [], ""
    for line in run.stdout.splitlines()[1:]:
        if line[:1].isspace():  # -i: the details of the socket on the line before
            cur += " | " + " ".join(line.split()[:12])
        else:
            if cur:
                lines.append(cur)
            cur = " ".join(line.split())
    if cur:
        lines.append(cur)
    return lines


class Meter:
    """CPU use over one sample: the proxy (all its processes), its workers or threads one by
    one, the load side (backend, the client this script waited for, this script), the whole
    machine, and what processes outside this run took."""

    def __init__(self, procs: Procs, proxy: Proc | None, backend: Proc) -> None:
        self.procs, self.proxy, self.backend = procs, proxy, backend
        self.s0 = Snapshot.take()
        self.self0 = _rusage(resource.RUSAGE_SELF)
        self.children0 = _rusage(resource.RUSAGE_CHILDREN)
        self.units0 = self._units(self.s0)

    def _units(self, snap: Snapshot) -> dict[int, float]:
        """The proxy's units of work: l4lb's worker processes (the process itself with
        workers = 1), HAProxy's threads."""
        if self.proxy is None:
            return {}
        kids = [p for p, (ppid, _, _) in snap.procs.items() if ppid == self.proxy.pid]
        if kids:  # a supervisor: its children are the workers
            return {p: snap.procs[p][1] for p in kids}
        threads = thread_cpu(self.proxy.pid)
        return threads if len(threads) > 1 else {self.proxy.pid: snap.cpu([self.proxy.pid])}

    def stop(self) -> dict:
        s1 = Snapshot.take()
        wall = s1.t - self.s0.t
        script = _rusage(resource.RUSAGE_SELF) - self.self0
        client = _rusage(resource.RUSAGE_CHILDREN) - self.children0  # the client, waited for

        def delta(pids0: list[int], pids1: list[int]) -> float:
            return s1.cpu(pids1) - self.s0.cpu([p for p in pids0 if p in pids1])

        def tree_delta(pid: int) -> float:
            return delta(self.s0.tree(pid), s1.tree(pid))

        proxy = tree_delta(self.proxy.pid) if self.proxy else 0.0
        backend = tree_delta(self.backend.pid)
        others_ours = sum(
            tree_delta(p.pid) for p in self.procs.procs if p not in (self.proxy, self.backend)
        )
        kthreads = sum(
            cpu - (self.s0.procs[p][1] if p in self.s0.procs else 0.0)
            for p, (_, cpu, kt) in s1.procs.items()
            if kt
        )
        other = s1.busy - self.s0.busy - proxy - backend - others_ours - script - client
        other -= kthreads
        units1 = self._units(s1)
        units = {p: units1[p] - self.units0[p] for p in units1 if p in self.units0}
        supervisor = None
        if self.proxy is not None and self.proxy.pid not in units and units:
            supervisor = (proxy - sum(units.values())) / wall
        return {
            "proxy_cpu": proxy / wall if self.proxy else None,
            "supervisor_cpu": supervisor,
            "client_cpu": client / wall,
            "backend_cpu": backend / wall,
            "load_cpu": (client + backend) / wall,
            "machine_cpu": (s1.busy_all - self.s0.busy_all) / wall,
            "other_cpu": max(0.0, other) / wall,
            # by pid (thread id): the same order as the connection counts of the workers
            "split": [units[p] / wall for p in sorted(units)] if len(units) > 1 else [],
            "units_changed": sorted(units1) != sorted(self.units0),
        }


# -- the run ---------------------------------------------------------------------------------


class Bench:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs = Procs(tmp, leader_only=True)
        self.results: dict[str, dict[str, dict]] = {t: {} for t in TESTS}
        self.notes: list[str] = []
        self.errors: dict[tuple[str, str], list[str]] = {}
        self.retry_left = float(RETRY_SECONDS)
        self.l4lb_logs: list[Proc] = []
        self.diag: list[tuple[str, list[str]]] = []
        self.timeouts = 0

    # proxies

    def start_proxy(self, target: str, backend: int, tag: str) -> tuple[Proc, int]:
        port = free_port()
        name = f"{target}-{tag}"
        level = int(target[-1])
        if target.startswith("l4lb"):
            cfg = self.tmp / f"{name}.toml"
            idle = 'idle_timeout = "10m"\n'
            cfg.write_text(l4lb_config(port, backend, workers=level, listener=idle))
            argv = [str(VENV / "l4lb"), "up", str(cfg), "--no-access-log", "--no-tui"]
        else:
            cfg = self.tmp / f"{name}.cfg"
            cfg.write_text(
                haproxy_config(port, backend, nbthread=level, maxconn=4096, timeout="10m")
            )
            argv = ["haproxy", "-db", "-f", str(cfg)]
        proc = self.procs.start(name, argv)
        wait_listening(proc, port)
        if target.startswith("l4lb"):
            self.l4lb_logs.append(proc)
        return proc, port

    def start_proxies(self, backend: int, tag: str) -> Targets:
        start = self.start_proxy
        out = start_targets(RUN_TARGETS, backend, lambda t: start(t, backend, tag), self.notes, tag)
        time.sleep(1.0)  # l4lb workers = 2: both workers up and listening
        for target, (proc, _) in out.items():
            if target == "l4lb-w2" and proc is not None:
                n = len(Snapshot.take().tree(proc.pid)) - 1
                if n != 2:
                    self.notes.append(f"{tag}: l4lb-w2 has {n} worker processes after 1 s")
        return out

    def stop_targets(self, targets: Targets) -> None:
        for target, (proc, _) in targets.items():
            if proc is not None:
                if not proc.alive():
                    self.notes.append(
                        f"{target} exited with {proc.popen.returncode} during the run: "
                        f"{proc.stderr_tail()}"
                    )
                self.procs.stop(proc)

    # one sample

    def run(
        self,
        test: str,
        target: str,
        proc: Proc | None,
        backend: Proc,
        argv: list[str],
        timeout: float,
        parse: Callable[[subprocess.CompletedProcess], float],
        probe_at: float,
        ports: tuple[int, ...] = (),
    ) -> dict | None:
        workers = worker_pids(proc)
        base = {p: socket_count(p) for p in workers}
        meter = Meter(self.procs, proc, backend)
        child = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=child_setup,
        )
        conns: list[int] = []
        try:
            if workers:  # halfway: connections each worker relays (2 sockets each)
                time.sleep(probe_at)
                conns = [max(0, (socket_count(p) - base[p]) // 2) for p in workers]
            stdout, stderr = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            # What the connections looked like while it hung, before the client is killed.
            self.diag.append(
                (f"{test} {target}: {argv[0]} still running after {timeout:.0f}s", sockets(ports))
            )
            child.kill()
            out, _ = child.communicate()
            self.notes.append(
                f"{test}: {argv[0]} through {target} hung: killed after {timeout:.0f}s "
                f"(its socket table is under Diagnostics) {out.strip()[-300:]}"
            )
            self.timeouts += 1
            return None
        run = subprocess.CompletedProcess(argv, child.returncode, stdout, stderr)
        usage = meter.stop()
        usage["conns"] = conns
        try:
            value = parse(run)
        except (ValueError, KeyError) as exc:
            out = (run.stdout[-400:] + run.stderr[-400:]).strip()
            self.notes.append(f"{test}: {argv[0]} through {target} failed: {exc} {out}")
            return None
        if usage["units_changed"]:
            self.notes.append(
                f"{test}: {target}: its worker processes changed during a sample "
                "(a worker died and was restarted?)"
            )
        return {"value": value, **usage}

    def series(
        self,
        test: str,
        targets: Targets,
        sample: Callable[[str, Proc | None, int], dict | None],
    ) -> None:
        """ROUNDS rounds over every target in turn (so a slow minute hits them all alike)."""
        unit = UNITS[test]
        samples: dict[str, list[dict]] = {t: [] for t in targets}
        failed = dict.fromkeys(targets, 0)
        for rnd in range(ROUNDS):
            for target, (proc, port) in targets.items():
                tries = 0
                while True:
                    t0 = time.monotonic()
                    got = sample(target, proc, port)
                    if got is None:
                        # Counted and shown in the table; run again within the retry budget.
                        failed[target] += 1
                        log(f"{test} {rnd + 1}/{ROUNDS} {target}: failed")
                        if tries >= RETRIES or self.retry_left <= 0:
                            break
                        tries += 1
                        self.retry_left -= time.monotonic() - t0
                        continue
                    got["disturbed"] = got["other_cpu"] > DISTURBED
                    cpu = got["proxy_cpu"]
                    split = "/".join(f"{s:.0%}" for s in got["split"])
                    log(
                        f"{test} {rnd + 1}/{ROUNDS} {target}: {got['value']:,.2f} {unit}"
                        + (f", proxy CPU {cpu:.0%}" if cpu is not None else "")
                        + (f" ({split})" if split else "")
                        + (f", conns/worker {got['conns']}" if got["conns"] else "")
                        + f", client CPU {got['client_cpu']:.0%}"
                        + f", backend CPU {got['backend_cpu']:.0%}"
                        + f", machine {got['machine_cpu']:.0%}"
                        + f", other {got['other_cpu']:.0%}"
                        + (" (disturbed)" if got["disturbed"] else "")
                    )
                    if not got["disturbed"] or tries >= RETRIES or self.retry_left <= 0:
                        break
                    tries += 1
                    self.retry_left -= time.monotonic() - t0
                    time.sleep(1.0)
                if got is not None:
                    samples[target].append(got)
        for target, vals in samples.items():
            self.results[test][target] = {**summary(vals), "failed": failed[target]}

    # (a) new connections and (b) requests over kept-alive connections, one nginx backend

    def http(self) -> None:
        tests = [t for t in ("conn", "keepalive") if t in RUN_TESTS]
        if not tests:
            return
        backend, port = start_http_backend(self.procs, self.tmp, None)
        targets = self.start_proxies(port, "http")
        try:
            for test in tests:
                log(f"--- {test}")
                for target, (proc, tport) in targets.items():  # warm up: 1 s each
                    self.wrk(test, target, proc, backend, tport, 1)
                self.series(
                    test,
                    targets,
                    lambda target, proc, tport, test=test: self.wrk(
                        test, target, proc, backend, tport, SECONDS
                    ),
                )
        finally:
            self.stop_targets(targets)
            self.procs.stop(backend)

    def wrk(
        self, test: str, target: str, proc: Proc | None, backend: Proc, port: int, seconds: int
    ) -> dict | None:
        argv = ["wrk", "-t1", f"-c{WRK_CONNS}", f"-d{seconds}s"]
        if test == "conn":
            argv += ["-H", "Connection: close"]
        argv.append(f"http://127.0.0.1:{port}/")

        def parse(run: subprocess.CompletedProcess) -> float:
            rate, errors = wrk_rate(run)
            if seconds == SECONDS and errors:
                self.errors.setdefault((test, target), []).extend(errors)
            return rate

        return self.run(test, target, proc, backend, argv, seconds + 15, parse, seconds / 2)

    # (c) bulk throughput, several streams

    def bulk(self) -> None:
        if "bulk" not in RUN_TESTS:
            return
        log("--- bulk")
        port = free_port()
        argv = ["iperf3", "-s", "-B", "127.0.0.1", "-p", str(port)]
        server = self.procs.start("iperf3-server", argv)
        wait_listening(server, port)
        targets = self.start_proxies(port, "bulk")

        def parse(run: subprocess.CompletedProcess) -> float:
            data = json.loads(run.stdout)
            if "error" in data:
                raise ValueError(data["error"])
            return data["end"]["sum_received"]["bits_per_second"] / 1e9

        def sample(target: str, proc: Proc | None, tport: int) -> dict | None:
            nonlocal server
            cargv = ["iperf3", "-c", "127.0.0.1", "-p", str(tport), "-t", str(SECONDS)]
            cargv += ["-P", str(STREAMS), "-J", "--connect-timeout", "3000"]
            timeouts = self.timeouts
            got = self.run(
                "bulk", target, proc, server, cargv, SECONDS + 10, parse, SECONDS / 2, (tport, port)
            )
            if self.timeouts > timeouts:
                # iperf3 -s serves one test at a time and blocks reading a stream's cookie:
                # after a hung test it may never answer again. A fresh one, same port.
                self.procs.stop(server)
                server = self.procs.start("iperf3-server", argv)
                wait_listening(server, port)
            return got

        try:
            self.series("bulk", targets, sample)
        finally:
            self.stop_targets(targets)
            self.procs.stop(server)

    def l4lb_log_notes(self) -> None:
        """Anything l4lb logged at warning level or above, or a traceback: worker deaths,
        restarts, errors."""
        for proc in self.l4lb_logs:
            bad = [
                line
                for line in proc.stderr_text().splitlines()
                if re.search(r"WARNING|ERROR|CRITICAL|Traceback|restarting|killed|exited", line)
                and "exited with status 0" not in line  # every worker, when it is stopped
            ]
            if bad:
                shown = "; ".join(bad[:8]) + (f" (+{len(bad) - 8} more)" if len(bad) > 8 else "")
                self.notes.append(f"{proc.name} logged {len(bad)} warning/error lines: {shown}")


def summary(vals: list[dict]) -> dict:
    if not vals:
        return {}
    xs = [v["value"] for v in vals]
    cpus = [v["proxy_cpu"] for v in vals if v["proxy_cpu"] is not None]
    per_sec = [v["value"] / v["proxy_cpu"] for v in vals if v["proxy_cpu"]]
    mid = sorted(vals, key=lambda v: v["value"])[(len(vals) - 1) // 2]
    return {
        "median": statistics.median(xs),
        "min": min(xs),
        "max": max(xs),
        "n": len(xs),
        "cpu": statistics.median(cpus) if cpus else None,
        "per_cpu_s": statistics.median(per_sec) if per_sec else None,
        "load_cpu": statistics.median(v["load_cpu"] for v in vals),
        "client_cpu": statistics.median(v["client_cpu"] for v in vals),
        "backend_cpu": statistics.median(v["backend_cpu"] for v in vals),
        "supervisor_cpu": max((v["supervisor_cpu"] or 0.0 for v in vals), default=0.0),
        "machine_cpu": statistics.median(v["machine_cpu"] for v in vals),
        "split": mid["split"],  # of the median sample
        "other_cpu_max": max(v["other_cpu"] for v in vals),
        "disturbed": sum(v["disturbed"] for v in vals),
        "samples": vals,
    }


# -- the report ------------------------------------------------------------------------------


VALUE_FMT = {"conn": ",.0f", "keepalive": ",.0f", "bulk": ".2f"}
PER_FMT = {"conn": ",.0f", "keepalive": ",.0f", "bulk": ".1f"}
TITLES = {
    "conn": "new connections/s (wrk -H 'Connection: close')",
    "keepalive": f"requests/s over {WRK_CONNS} kept-alive connections (wrk)",
    "bulk": f"bulk Gbit/s (iperf3 -P {STREAMS})",
}


def render(bench: Bench) -> str:
    results, notes, errors, diag = bench.results, bench.notes, bench.errors, bench.diag
    out: list[str] = []
    rows = [
        "| test | target | rate (min-max) | proxy CPU | split over workers/threads "
        "| per proxy CPU-second | client + backend CPU | machine CPU | failed samples |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for test in TESTS:
        if test not in RUN_TESTS:
            continue
        vf, pf = VALUE_FMT[test], PER_FMT[test]
        for t in RUN_TARGETS:
            d = results[test].get(t)
            if not d or "median" not in d:
                n = d.get("failed", 0) if d else 0
                rows.append(f"| {test} ({UNITS[test]}) | {t} | no result | | | | | | {n} |")
                continue
            split = " / ".join(f"{s:.0%}" for s in d["split"]) or "-"
            rows.append(
                f"| {test} ({UNITS[test]}) | {t} "
                f"| {fmt(d['median'], vf)} ({fmt(d['min'], vf)}-{fmt(d['max'], vf)}) "
                f"| {fmt(d['cpu'], '.0%')} | {split} | {fmt(d['per_cpu_s'], pf)} "
                f"| {fmt(d['client_cpu'], '.0%')} + {fmt(d['backend_cpu'], '.0%')} "
                f"| {fmt(d['machine_cpu'], '.0%')} | {d['failed']} |"
            )
    out += [*rows, ""]

    detail = []
    for test in TESTS:
        for t in RUN_TARGETS:
            d = results.get(test, {}).get(t)
            if not d or not any(v["split"] for v in d.get("samples", [])):
                continue
            parts = []
            for v in d["samples"]:
                part = f"{v['value']:{VALUE_FMT[test]}}: " + "/".join(
                    f"{x:.0%}" for x in v["split"]
                )
                if v["conns"]:
                    part += " (" + "/".join(map(str, v["conns"])) + " conns)"
                parts.append(part)
            sup = d.get("supervisor_cpu")
            extra = f"; l4lb supervisor at most {sup:.1%}" if sup else ""
            detail.append(f"- {test} {t}: " + "; ".join(parts) + extra)
    if detail:
        out += [
            "Every sample of the 2-worker and 2-thread targets: the rate, then the CPU of each "
            "worker (l4lb) or thread (HAProxy), in pid order, then for l4lb the connections "
            "each worker relayed halfway through the sample, in the same order:",
            "",
            *detail,
            "",
        ]

    pairs = [
        ("l4lb w=2 / w=1", "l4lb-w2", "l4lb-w1"),
        ("HAProxy nbt=2 / nbt=1", "haproxy-nbt2", "haproxy-nbt1"),
        ("l4lb / HAProxy, 1 worker / 1 thread", "l4lb-w1", "haproxy-nbt1"),
        ("l4lb / HAProxy, 2 workers / 2 threads", "l4lb-w2", "haproxy-nbt2"),
    ]
    head = ["| ratio |"]
    for test in TESTS:
        if test in RUN_TESTS:
            head.append(f" {test} | {test} per CPU-s |")
    out.append("".join(head))
    out.append("|---|" + "---:|" * (2 * sum(t in RUN_TESTS for t in TESTS)))
    for label, a, b in pairs:
        if a not in RUN_TARGETS or b not in RUN_TARGETS:
            continue
        cells = []
        for test in TESTS:
            if test not in RUN_TESTS:
                continue
            da, db = results[test].get(a, {}), results[test].get(b, {})
            cells += [ratio(da.get(key), db.get(key)) for key in ("median", "per_cpu_s")]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    out.append("")

    out += disturbed_lines(
        results,
        f"Disturbed samples kept after {RETRIES} retries or the retry budget ran out "
        f"(processes outside this run used more than {DISTURBED:.0%} of a CPU):",
        lambda d: f"up to {d['other_cpu_max']:.0%}",
    )
    for (test, target), errs in errors.items():
        notes.append(f"{test}: wrk through {target}: " + "; ".join(errs))
    out += notes_lines(notes) or [
        "Notes: none (no failed samples, no wrk socket errors, no l4lb warnings).",
        "",
    ]
    for what, lines in diag:
        out += [f"Diagnostics: {what}; `ss -tanpi` on the proxy's and the backend's ports:", ""]
        out += ["```", *(lines or ["(no sockets)"]), "```", ""]
    return "\n".join(out)


def versions() -> str:
    return "\n".join(
        [
            l4lb_version(ssl=False),
            f"- {first_line(['haproxy', '-v'])}",
            f"- {first_line(['nginx', '-v'])}",
            f"- {first_line(['iperf3', '--version'])}",
            f"- {first_line(['wrk', '--version'])}",
        ]
    )


def main() -> int:
    check_setup("workers", __doc__, ("iperf3", "wrk", "haproxy", "nginx"), pin=False)
    affinity = sorted(os.sched_getaffinity(0))
    if len(affinity) < 2:
        log(f"warning: this process may only run on CPU {affinity}; nothing can scale")
    return run_bench(
        "Workers benchmark (l4lb workers = 1, 2; HAProxy nbthread 1, 2)",
        versions,
        f"BENCH_SECONDS={SECONDS} BENCH_ROUNDS={ROUNDS} BENCH_WRK_CONNS={WRK_CONNS} "
        f"BENCH_STREAMS={STREAMS}\n"
        "- proxy CPU: utime+stime of the proxy's processes (l4lb: supervisor and workers) over "
        "wall time, 100% = one core; client: wrk or iperf3; backend: nginx or iperf3 -s; "
        "machine CPU: all CPUs busy "
        f"(incl. softirq), {100 * len(affinity)}% = every core",
        Bench,
        lambda bench: [("", bench.http), ("", bench.bulk), ("", bench.l4lb_log_notes)],
        render,
        "workers-",
        machine_note=f"; CPUs usable here: {','.join(map(str, affinity))}; nothing pinned",
    )


if __name__ == "__main__":
    sys.exit(main())
