"""What the benchmarks in bench/ share: process handling, CPU metering, interference
detection, rounds with retries, and the report header (machine, commit, versions).

Processes. Every process a benchmark starts is pinned with `taskset -c CPU` (unless it asks
for none: bench/workers.py), runs in its own session (process group), and gets
PR_SET_PDEATHSIG so the kernel kills it if the benchmark dies without cleaning up. `Procs`
lists the live process groups in $BENCH_PGID_FILE; the shell wrapper's trap (bench/lib.sh)
kills whatever is left of them (nginx workers outlive a killed master).

Interference. A sample counts as disturbed when another process (a test suite, a build) used
more than DISTURBED of a CPU the sample depends on: the CPU's busy time in /proc/stat less what
this run's own processes used there. `Runner.series` runs a disturbed sample again, up to
RETRIES times within a budget of RETRY_SECONDS for the whole run, and keeps the count.

Environment: BENCH_PROXY_CPU (0), BENCH_LOAD_CPU (1), BENCH_RETRIES (2),
BENCH_RETRY_SECONDS (60).
"""

from __future__ import annotations

import collections
import ctypes
import datetime
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv" / "bin"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        sys.exit(f"bench: {name}={value!r} is not an integer")


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name, "")
    try:
        return float(value) if value else default
    except ValueError:
        sys.exit(f"bench: {name}={value!r} is not a number")


def env_list(name: str, allowed: tuple[str, ...], default: tuple[str, ...] | None = None):
    value = os.environ.get(name, "")
    if not value:
        return allowed if default is None else default
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    bad = [v for v in items if v not in allowed]
    if bad:
        sys.exit(f"bench: {name}: unknown {', '.join(bad)}; choose from {', '.join(allowed)}")
    return items


PROXY_CPU = env_int("BENCH_PROXY_CPU", 0)
LOAD_CPU = env_int("BENCH_LOAD_CPU", 1 if (os.cpu_count() or 1) > 1 else 0)
RETRIES = env_int("BENCH_RETRIES", 2)
RETRY_SECONDS = env_int("BENCH_RETRY_SECONDS", 60)
DISTURBED = 0.10  # another process used more than this share of a CPU we measure on


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- processes -------------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def child_setup() -> None:
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Proc:
    def __init__(self, name: str, popen: subprocess.Popen, stderr_path: Path) -> None:
        self.name = name
        self.popen = popen
        self.stderr_path = stderr_path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def stderr_tail(self, lines: int = 15) -> str:
        return "\n".join(self.stderr_text().strip().splitlines()[-lines:])


class Procs:
    """Every process this run started, each in its own session (process group). `stop`
    sends SIGTERM to the whole group, or with `leader_only` to the leader alone (the l4lb
    supervisor and nginx's master stop their workers themselves)."""

    def __init__(self, tmp: Path, leader_only: bool = False) -> None:
        self.tmp = tmp
        self.leader_only = leader_only
        self.procs: list[Proc] = []
        self.count = 0

    def start(self, name: str, argv: list[str], cpu: int | None = None, **kw) -> Proc:
        """Start `argv` pinned to `cpu` (None: unpinned)."""
        self.count += 1
        stderr_path = self.tmp / f"{name}.{self.count}.stderr"
        kw.setdefault("stdout", subprocess.DEVNULL)
        kw.setdefault("stdin", subprocess.DEVNULL)
        with open(stderr_path, "wb") as err:
            popen = subprocess.Popen(
                argv if cpu is None else ["taskset", "-c", str(cpu), *argv],
                stderr=err,
                start_new_session=True,
                preexec_fn=child_setup,
                **kw,
            )
        proc = Proc(name, popen, stderr_path)
        self.procs.append(proc)
        self._record()
        return proc

    def stop(self, proc: Proc, timeout: float = 5.0) -> None:
        if proc.alive():
            try:
                (os.kill if self.leader_only else os.killpg)(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:  # whatever is left in its group (nginx or l4lb workers), and a stuck leader
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.popen.wait(5)
        except subprocess.TimeoutExpired:
            log(f"warning: {proc.name} (pid {proc.pid}) did not exit")
        if proc in self.procs:
            self.procs.remove(proc)
            self._record()

    def _record(self) -> None:
        """Tell the shell wrapper which process groups are live, for its trap if we die."""
        path = os.environ.get("BENCH_PGID_FILE")
        if path:
            tmp = f"{path}.new"
            Path(tmp).write_text("".join(f"{p.pid}\n" for p in self.procs))
            os.replace(tmp, path)

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs)):
            self.stop(proc, timeout=3.0)

    def stop_targets(self, targets: Targets) -> None:
        for proc, _ in targets.values():
            if proc is not None:
                self.stop(proc)


def on_signal(signum: int, _frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def prepare_process(pin: bool = True) -> None:
    """Raise the fd limit, pin this script to the load CPU (with `pin`), turn signals into
    KeyboardInterrupt (so `finally:` blocks stop every process)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if pin:
        if PROXY_CPU == LOAD_CPU:
            log("warning: one CPU only; proxies and load generators share it")
        os.sched_setaffinity(0, {LOAD_CPU})
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)


# -- /proc -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    want = f":{port:04X}"
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[1].endswith(want) and fields[3] == "0A":
                return True
    return False


def wait_listening(proc: Proc, port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if listening(port):
            return
        if not proc.alive():
            raise RuntimeError(
                f"{proc.name} exited with {proc.popen.returncode} before listening on "
                f"{port}:\n{proc.stderr_tail()}"
            )
        time.sleep(0.05)
    raise RuntimeError(f"{proc.name} is not listening on {port} after {timeout}s")


def wait_accepting(proc: Proc, port: int, timeout: float = 30.0) -> None:
    """`wait_listening` by connecting: reading /proc/net/tcp takes seconds when the machine
    holds many sockets (another benchmark's 100k connections), a connect does not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            pass
        if not proc.alive():
            raise RuntimeError(
                f"{proc.name} exited with {proc.popen.returncode} before listening on "
                f"{port}:\n{proc.stderr_tail()}"
            )
        time.sleep(0.05)
    raise RuntimeError(f"{proc.name} is not listening on {port} after {timeout}s")


def tree(pid: int) -> list[int]:
    """`pid` and its descendants (nginx master + worker)."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children[ppid].append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def rss_kb(pid: int) -> int:
    total = 0
    for p in tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of `pid` and its descendants."""
    user = system = 0
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11])
        system += int(fields[12])
    return user / CLK_TCK, system / CLK_TCK


def cpu_seconds(pid: int) -> float:
    return sum(cpu_times(pid))


def fd_count(pid: int) -> int:
    total = 0
    for p in tree(pid):
        try:
            total += len(os.listdir(f"/proc/{p}/fd"))
        except OSError:
            pass
    return total


def cpu_busy() -> dict[int, float]:
    """Seconds each CPU spent in user, nice and system time (not irq/softirq, not idle)."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            name, user, nice, system = line.split()[:4]
            out[int(name[3:])] = (int(user) + int(nice) + int(system)) / CLK_TCK
    return out


def _rusage(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


class Meter:
    """CPU use over one sample: the proxy's own, and what other processes took from each CPU.

    "Other" is a CPU's busy time less what this run's processes used on it: the proxy on
    PROXY_CPU; the backend, this script and the client it waited for on LOAD_CPU. It shows
    samples disturbed by unrelated work on the machine (a test suite, a build). `load_cpu` is
    how busy LOAD_CPU was in all (1.0: the client side was saturated).
    """

    def __init__(self, proxy: Proc | None, backend: Proc) -> None:
        self.proxy, self.backend = proxy, backend
        self.t0 = time.monotonic()
        self.busy0 = cpu_busy()
        self.proxy0 = cpu_times(proxy.pid) if proxy else (0.0, 0.0)
        self.ours0 = cpu_seconds(backend.pid) + _rusage(resource.RUSAGE_CHILDREN)
        self.ours0 += _rusage(resource.RUSAGE_SELF)

    def stop(self) -> dict:
        wall = time.monotonic() - self.t0
        busy = cpu_busy()
        user, system = cpu_times(self.proxy.pid) if self.proxy else (0.0, 0.0)
        user, system = user - self.proxy0[0], system - self.proxy0[1]
        proxy = user + system
        ours = cpu_seconds(self.backend.pid) + _rusage(resource.RUSAGE_CHILDREN)
        ours += _rusage(resource.RUSAGE_SELF) - self.ours0

        def busy_on(cpu: int) -> float:
            return busy.get(cpu, 0.0) - self.busy0.get(cpu, 0.0)

        return {
            "proxy_cpu": proxy / wall if self.proxy else None,
            "proxy_sys": system / proxy if self.proxy and proxy > 0 else None,
            "other_proxy_cpu": max(0.0, busy_on(PROXY_CPU) - proxy) / wall,
            "other_load_cpu": max(0.0, busy_on(LOAD_CPU) - ours) / wall,
            "load_cpu": busy_on(LOAD_CPU) / wall,
        }


def disturbed(sample: dict, proxied: bool) -> bool:
    return sample["other_load_cpu"] > DISTURBED or (
        proxied and sample["other_proxy_cpu"] > DISTURBED
    )


def summary(vals: list[dict]) -> dict:
    """Median, min, max of `value` over the samples, and the CPU figures (median)."""
    if not vals:
        return {}
    xs = [v["value"] for v in vals]
    cpus = [v["proxy_cpu"] for v in vals if v["proxy_cpu"] is not None]
    per_core = [v["value"] / v["proxy_cpu"] for v in vals if v["proxy_cpu"]]
    out = {
        "median": statistics.median(xs),
        "min": min(xs),
        "max": max(xs),
        "n": len(xs),
        "cpu": statistics.median(cpus) if cpus else None,
        "per_core": statistics.median(per_core) if per_core else None,
        "load_cpu": statistics.median(v.get("load_cpu", 0.0) for v in vals),
        "other_proxy_cpu_max": max(v["other_proxy_cpu"] for v in vals),
        "other_load_cpu_max": max(v["other_load_cpu"] for v in vals),
        "disturbed": sum(v["disturbed"] for v in vals),
        "samples": vals,
    }
    # Extra numeric fields a benchmark attached to its samples (latency percentiles...):
    # the value from the sample whose `value` is the median one.
    mid = sorted(vals, key=lambda v: v["value"])[(len(vals) - 1) // 2]
    for key, v in mid.items():
        if key not in out and key not in ("value", "proxy_cpu", "disturbed"):
            out[key] = v
    return out


Targets = dict[str, tuple[Proc | None, int]]


def start_targets(
    targets: Iterable[str],
    backend: int,
    start: Callable[[str], tuple[Proc, int]],
    notes: list[str],
    tag: str = "",
) -> Targets:
    """`start(target)` for each proxy; "direct" is the backend itself. A proxy that does not
    start is left out (with a note), the others run."""
    out: Targets = {}
    for target in targets:
        if target == "direct":
            out[target] = (None, backend)
            continue
        try:
            out[target] = start(target)
        except RuntimeError as exc:
            what = f"{tag}: {target}" if tag else target
            notes.append(f"{what} did not start: {exc}")
            log(f"{what} did not start: {exc}")
    return out


class Runner:
    """Rounds of samples over several targets, interleaved, with interference retries."""

    def __init__(self, procs: Procs, rounds: int, retry_seconds: int | None = None) -> None:
        self.procs = procs
        self.rounds = rounds
        self.notes: list[str] = []
        self.retry_left = float(RETRY_SECONDS if retry_seconds is None else retry_seconds)

    def run(
        self,
        test: str,
        target: str,
        proc: Proc | None,
        backend: Proc,
        argv: list[str],
        timeout: float,
        parse: Callable[[subprocess.CompletedProcess], float | dict],
        env: dict[str, str] | None = None,
    ) -> dict | None:
        """One sample: `argv` run to completion on LOAD_CPU, with CPU accounting around it.
        `parse` returns the value, or a dict with "value" and extra fields."""
        meter = Meter(proc, backend)
        try:
            run = subprocess.run(
                ["taskset", "-c", str(LOAD_CPU), *argv],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                preexec_fn=child_setup,
                env=env,
            )
        except subprocess.TimeoutExpired:
            self.notes.append(f"{test}: {argv[0]} through {target} timed out")
            return None
        usage = meter.stop()
        try:
            value = parse(run)
        except (ValueError, KeyError) as exc:
            out = (run.stdout[-300:] + run.stderr[-300:]).strip()
            self.notes.append(f"{test}: {argv[0]} through {target} failed: {exc} {out}")
            return None
        if isinstance(value, dict):
            return {**value, **usage}
        return {"value": value, **usage}

    def series(
        self,
        test: str,
        unit: str,
        targets: Targets,
        sample: Callable[[str, Proc | None, int], dict | None],
        fmt: Callable[[dict], str] | None = None,
    ) -> dict[str, dict]:
        """ROUNDS rounds of `sample` over every target in turn; the summary per target."""
        samples: dict[str, list[dict]] = {t: [] for t in targets}
        for rnd in range(self.rounds):
            for target, (proc, tport) in targets.items():
                tries = 0
                while True:
                    t0 = time.monotonic()
                    got = sample(target, proc, tport)
                    if got is None:
                        log(f"{test} round {rnd + 1}/{self.rounds} {target}: failed")
                        break
                    got["disturbed"] = disturbed(got, proxied=proc is not None)
                    cpu = got["proxy_cpu"]
                    log(
                        f"{test} round {rnd + 1}/{self.rounds} {target}: "
                        f"{got['value']:,.2f} {unit}"
                        + (f" ({fmt(got)})" if fmt else "")
                        + (f", proxy CPU {cpu:.0%}" if cpu is not None else "")
                        + f", load CPU {got['load_cpu']:.0%}"
                        + f"; other processes: CPU {PROXY_CPU} {got['other_proxy_cpu']:.0%}, "
                        f"CPU {LOAD_CPU} {got['other_load_cpu']:.0%}"
                        + (" (disturbed)" if got["disturbed"] else "")
                    )
                    if not got["disturbed"] or tries >= RETRIES or self.retry_left <= 0:
                        break
                    # Unrelated work took a CPU: measure again, within the retry budget.
                    tries += 1
                    self.retry_left -= time.monotonic() - t0
                    time.sleep(1.0)
                if got is not None:
                    samples[target].append(got)
        self.check_alive(targets, test)
        return {target: summary(vals) for target, vals in samples.items()}

    def check_alive(self, targets: Targets, test: str) -> None:
        for target, (proc, _port) in targets.items():
            if proc is not None and not proc.alive():
                self.notes.append(
                    f"{test}: {target} exited with {proc.popen.returncode}: {proc.stderr_tail()}"
                )


def disturbed_lines(
    results: dict[str, dict[str, dict]],
    intro: str = (
        f"Disturbed samples, kept after {RETRIES} retries or the retry budget ran out "
        f"(another process used more than {DISTURBED:.0%} of a CPU the sample depends "
        "on; those figures are low and noisy):"
    ),
    detail: Callable[[dict], str] = lambda d: (
        f"up to {d['other_proxy_cpu_max']:.0%} of CPU {PROXY_CPU}, "
        f"{d['other_load_cpu_max']:.0%} of CPU {LOAD_CPU}"
    ),
) -> list[str]:
    """Report lines for the disturbed samples that had to be kept, per test and target."""
    busy = [
        f"{test}/{t}: {d['disturbed']} of {d['n']} ({detail(d)})"
        for test, per_target in results.items()
        for t, d in per_target.items()
        if d and d.get("disturbed")
    ]
    return [intro, "", *[f"- {b}" for b in busy], ""] if busy else []


# -- report pieces ---------------------------------------------------------------------------


def fixed_rate_table(fixed: dict, targets: Iterable[str]) -> list[str]:
    """The table of a fixed-rate latency run (h2load --rps): per target p50, p99 (median of
    the rounds, with min-max), p99.9, completed rate, proxy CPU, and what the proxy added
    over `direct`; then a blank line."""
    direct = fixed.get("direct", {})
    out = [
        "| target | p50 ms | p99 ms (min-max) | p99.9 ms | completed req/s | proxy CPU "
        "| p50 added | p99 added |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for target in targets:
        d = fixed.get(target)
        if not d:
            out.append(f"| {target} | failed | | | | | | |")
            continue
        add50 = d["p50_ms"] - direct["p50_ms"] if direct and target != "direct" else None
        add99 = d["median"] - direct["median"] if direct and target != "direct" else None
        out.append(
            f"| {target} | {d['p50_ms']:.3f} | {d['median']:.3f} ({d['min']:.3f}-"
            f"{d['max']:.3f}) | {d['p999_ms']:.3f} | {d['rate']:,.0f} "
            f"| {fmt(d.get('cpu'), '.0%')} | {fmt(add50, '+.3f')} | {fmt(add99, '+.3f')} |"
        )
    out.append("")
    return out


def fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def ratio(a: float | None, b: float | None) -> str:
    return fmt(a / b if a is not None and b else None, ".2f")


def notes_lines(notes: Iterable[str]) -> list[str]:
    bullets = [f"- {n}" for n in notes]
    return ["Notes:", "", *bullets, ""] if bullets else []


def rss_lines(title: str, rss: dict[str, dict[str, int]], targets: Iterable[str]) -> list[str]:
    """A table of each target's RSS after each test (`rss`: test -> target -> KB)."""
    if not rss:
        return []
    out = [
        title,
        "",
        "| target | " + " | ".join(f"after {t}" for t in rss) + " |",
        "|---|" + "---:|" * len(rss),
    ]
    for target in targets:
        out.append(
            f"| {target} | " + " | ".join(f"{r.get(target, 0):,}" for r in rss.values()) + " |"
        )
    return [*out, ""]


def wrk_rate(run: subprocess.CompletedProcess) -> tuple[float, list[str]]:
    """wrk's Requests/sec, and its socket-error and non-2xx lines."""
    m = re.search(r"Requests/sec:\s+([\d.]+)", run.stdout)
    if run.returncode != 0 or not m:
        raise ValueError(f"exit {run.returncode}")
    errors = []
    for pattern in (r"Socket errors:[^\n]*", r"Non-2xx or 3xx responses:[^\n]*"):
        err = re.search(pattern, run.stdout)
        if err:
            errors.append(err.group(0).strip())
    return float(m.group(1)), errors


def percentile(sorted_xs: list[float], p: float) -> float:
    if not sorted_xs:
        return float("nan")
    k = (len(sorted_xs) - 1) * p
    lo = int(k)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (k - lo)


def parse_h2load(log_path: Path, stdout: str, seconds: float) -> dict:
    """Latency percentiles (ms) from h2load's per-request `--log-file` (start, status,
    microseconds per line), and its failure counts from `stdout`. Status 0: h2load 1.52 logs
    some of the requests in flight when its warm-up ends with status 0 (all with the same
    start time, and counted as succeeded in its summary); they are not counted as errors."""
    durations, bad, others = [], 0, {}
    for line in log_path.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) != 3:
            continue
        if parts[1] not in ("200", "0"):
            bad += 1
            others[parts[1]] = others.get(parts[1], 0) + 1
        durations.append(int(parts[2]) / 1000.0)
    if not durations:
        raise ValueError("h2load logged no request")
    durations.sort()
    failed = re.search(r"(\d+) failed, (\d+) errored, (\d+) timeout", stdout)
    return {
        "value": percentile(durations, 0.99),
        "p50_ms": percentile(durations, 0.50),
        "p99_ms": percentile(durations, 0.99),
        "p999_ms": percentile(durations, 0.999),
        "max_ms": durations[-1],
        "mean_ms": statistics.fmean(durations),
        "rate": len(durations) / seconds,
        "requests": len(durations),
        "non200": bad,
        "statuses": ", ".join(f"{n} x {code}" for code, n in sorted(others.items())),
        "failed": sum(int(x) for x in failed.groups()) if failed else 0,
    }


# -- configs shared by several benchmarks ----------------------------------------------------


def nginx_temp_paths(tmp: Path, name: str) -> str:
    return "\n".join(
        f"    {kind}_temp_path {tmp}/{name}-{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )


def nginx_config(tmp: Path, name: str, connections: int, body: str) -> str:
    """A 1-worker nginx in the foreground; `body` is its `http` or `stream` block (a `stream`
    block loads the module)."""
    stream = body.startswith("stream")
    module = "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n" if stream else ""
    return f"""{module}user root;
daemon off;
worker_processes 1;
worker_rlimit_nofile 20000;
pid {tmp}/{name}.pid;
error_log stderr error;

events {{
    worker_connections {connections};
}}

{body}"""


def nginx_stream_config(
    tmp: Path, name: str, port: int, backend: int, connections: int, listen: str = "", server=""
) -> str:
    """nginx `stream` to `backend`; `listen`: more listen options, `server`: more lines."""
    return nginx_config(
        tmp,
        name,
        connections,
        f"""stream {{
    server {{
        listen 127.0.0.1:{port}{listen} backlog=4096;
        proxy_pass 127.0.0.1:{backend};
{server}    }}
}}
""",
    )


def nginx_backend_config(tmp: Path, port: int, root: Path, name: str = "backend-http") -> str:
    """A 1-worker nginx serving `root`, no access log, long keep-alive."""
    return nginx_config(
        tmp,
        name,
        4096,
        f"""http {{
    access_log off;
{nginx_temp_paths(tmp, name)}
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {root};
        location / {{ }}
    }}
}}
""",
    )


def start_nginx(procs: Procs, name: str, cfg: Path, cpu: int | None) -> Proc:
    return procs.start(name, ["nginx", "-e", "stderr", "-p", str(cfg.parent), "-c", str(cfg)], cpu)


SMALL_FILE = {"index.html": b"l4lb bench: 32 bytes of body..\n"}


def start_http_backend(
    procs: Procs, tmp: Path, cpu: int | None, files: dict[str, bytes] = SMALL_FILE
) -> tuple[Proc, int]:
    """The HTTP backend: nginx serving `files` (name -> content) from tmp/www."""
    port = free_port()
    www = tmp / "www"
    www.mkdir(exist_ok=True)
    for name, body in files.items():
        (www / name).write_bytes(body)
    cfg = tmp / "backend-http.conf"
    cfg.write_text(nginx_backend_config(tmp, port, www))
    backend = start_nginx(procs, "backend-http", cfg, cpu)
    wait_listening(backend, port)
    return backend, port


def l4lb_config(
    port: int, backend: int, protocol: str = "tcp", workers: int | None = None, listener=""
) -> str:
    """l4lb with one listener to one server; `listener`: more of the listener's settings."""
    global_ = "" if workers is None else f"workers = {workers}\n"
    return f"""[global]
access_log = false
drain_timeout = "1s"
{global_}
[listener.bench]
bind = "127.0.0.1:{port}"
protocol = "{protocol}"
pool = "bench"
max_connections = 10000
backlog = 4096
{listener}
[pool.bench]
balance = "round_robin"

[[pool.bench.servers]]
address = "127.0.0.1:{backend}"
"""


def haproxy_config(
    port: int,
    backend: int,
    mode: str = "tcp",
    nbthread: int = 1,
    maxconn: int = 4000,
    timeout: str = "30s",
    bind: str = "",
    global_: str = "",
    listen: str = "",
) -> str:
    """HAProxy with one `listen` section to one server; the strings add lines or options."""
    return f"""global
    nbthread {nbthread}
    maxconn {maxconn}
{global_}
defaults
    mode {mode}
    maxconn {maxconn}
    timeout connect 5s
    timeout client {timeout}
    timeout server {timeout}

listen bench
    bind 127.0.0.1:{port}{bind}
    server s1 127.0.0.1:{backend}
{listen}"""


# -- py-spy ----------------------------------------------------------------------------------


def py_spy() -> Path | None:
    """py-spy from .venv, installed there from PyPI if missing."""
    spy = VENV / "py-spy"
    if not spy.exists():
        log("installing py-spy into .venv")
        subprocess.run(
            [str(VENV / "pip"), "install", "-q", "--disable-pip-version-check", "py-spy"],
            check=False,
        )
    return spy if spy.exists() else None


def py_spy_record(
    pid: int, seconds: float, out: Path, rate: int = 100, native: bool = True
) -> subprocess.Popen | None:
    """Start `py-spy record -f raw` on `pid` for `seconds` (pinned to LOAD_CPU). With
    `native`, C frames (OpenSSL, uvloop, httptools, libc system call wrappers) are in the
    stacks too; py-spy then stops the process for each sample, which slows it down a little."""
    spy = py_spy()
    if spy is None:
        return None
    argv = ["taskset", "-c", str(LOAD_CPU), str(spy), "record", "-f", "raw", "-r", str(rate)]
    argv += ["-d", str(int(seconds)), "-o", str(out), "--pid", str(pid)]
    argv += ["--native"] if native else ["--nonblocking"]
    return subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=child_setup,
    )


# Leaf frames in libc that are system calls (the time is mostly the kernel's).
SYSCALLS = frozenset(
    [
        "accept",
        "accept4",
        "close",
        "__close",
        "connect",
        "epoll_ctl",
        "epoll_wait",
        "epoll_pwait",
        "fcntl",
        "getpid",
        "getsockname",
        "getpeername",
        "getsockopt",
        "setsockopt",
        "ioctl",
        "io_uring_enter",
        "read",
        "readv",
        "recv",
        "recvfrom",
        "recvmsg",
        "getrandom",
        "madvise",
        "mmap",
        "munmap",
        "brk",
        "send",
        "sendto",
        "sendmsg",
        "shutdown",
        "socket",
        "socketpair",
        "splice",
        "syscall",
        "write",
        "writev",
        "pipe2",
        "__libc_write",
        "__libc_read",
        "__write",
        "__read",
        "__send",
        "__recv",
        "__libc_send",
        "__libc_recv",
        "clock_gettime",
        "__clock_gettime",
    ]
)
ALLOC = frozenset(
    [
        "malloc",
        "free",
        "realloc",
        "calloc",
        "cfree",
        "_int_malloc",
        "_int_free",
        "malloc_consolidate",
        "__libc_malloc",
        "__libc_free",
        "_int_realloc",
        "tcache_get",
        "unlink_chunk",
    ]
)


def frame_name(frame: str) -> str:
    """`Session.connect (l4lb/listener.py:535)` -> `Session.connect`."""
    return frame.split(" (", 1)[0]


def frame_where(frame: str) -> str:
    """`Session.connect (l4lb/listener.py:535)` -> `l4lb/listener.py:535`."""
    if frame.endswith(")") and " (" in frame:
        return frame.rsplit(" (", 1)[1][:-1]
    return ""


def read_profile(path: Path) -> list[tuple[list[str], int]]:
    """py-spy's raw (collapsed) output: one `frame;frame;... count` per line, root first."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            out.append((stack.split(";"), int(count)))
    return out


def grouped(
    stacks: list[tuple[list[str], int]], classify: Callable[[list[str]], str]
) -> list[tuple[str, float]]:
    """Share of samples per category; `classify(frames)` names one for each stack."""
    total = sum(n for _, n in stacks) or 1
    counts: collections.Counter[str] = collections.Counter()
    for frames, n in stacks:
        counts[classify(frames)] += n
    return [(c, n / total) for c, n in counts.most_common()]


def top_self(stacks: list[tuple[list[str], int]], top: int = 15) -> list[tuple[str, float]]:
    """Leaf frames by share of samples (a Python line, a C function, a libc call)."""
    total = sum(n for _, n in stacks) or 1
    counts: collections.Counter[str] = collections.Counter()
    for frames, n in stacks:
        counts[frames[-1]] += n
    return [(f, n / total) for f, n in counts.most_common(top)]


def top_inclusive(
    stacks: list[tuple[list[str], int]],
    keep: Callable[[str], bool],
    top: int = 15,
    below: float = 0.95,
) -> list[tuple[str, float]]:
    """Functions (any line) by share of samples with them anywhere on the stack; only frames
    `keep(frame)` accepts, and only below `below` (drops the loop's own frames)."""
    total = sum(n for _, n in stacks) or 1
    counts: collections.Counter[str] = collections.Counter()
    for frames, n in stacks:
        names = set()
        for f in frames:
            if keep(f):
                where = frame_where(f).rsplit(":", 1)[0]
                names.add(f"{frame_name(f)} ({where})" if where else frame_name(f))
        for name in names:
            counts[name] += n
    return [(f, n / total) for f, n in counts.most_common() if n / total < below][:top]


def share_table(rows: list[tuple[str, float]], head: str) -> list[str]:
    out = [f"| share | {head} |", "|---:|---|"]
    out += [f"| {v:.1%} | {k} |" for k, v in rows]
    return out


# -- the report header -----------------------------------------------------------------------


def first_line(argv: list[str]) -> str:
    try:
        run = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return ((run.stdout or run.stderr).strip().splitlines() or ["?"])[0]


def l4lb_version(ssl: bool = True) -> str:
    loop = os.environ.get("L4LB_LOOP") or (
        "uvloop"
        if (VENV / "python").exists()
        and subprocess.run(
            [str(VENV / "python"), "-c", "import uvloop"], capture_output=True, check=False
        ).returncode
        == 0
        else "asyncio"
    )
    line = (
        f"- l4lb: {first_line([str(VENV / 'l4lb'), '--version'])}, "
        f"{first_line([str(VENV / 'python'), '--version'])}, loop {loop}"
    )
    ssl_version = [str(VENV / "python"), "-c", "import ssl; print(ssl.OPENSSL_VERSION)"]
    return f"{line}, {first_line(ssl_version)}" if ssl else line


def machine() -> str:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        kb_total = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb_total / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return f"{os.cpu_count()} CPUs ({model}), {mem}, Linux {os.uname().release}"


def commit(paths: tuple[str, ...] = ("l4lb",)) -> str:
    def git(*args: str) -> str:
        run = subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False
        )
        return run.stdout.strip()

    rev = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", *paths)
    where = ", ".join(p + "/" for p in paths)
    return rev + (f" ({where} with uncommitted changes)" if dirty else "")


def now_utc() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


# -- main ------------------------------------------------------------------------------------


def check_setup(name: str, doc: str | None, tools: tuple[str, ...], pin: bool = True) -> None:
    """The command line (none; -h prints `doc`), the tools and .venv, then prepare_process."""
    if len(sys.argv) > 1:
        print(doc)
        sys.exit(0 if sys.argv[1] in ("-h", "--help") else 2)
    for tool in tools:
        if shutil.which(tool) is None:
            sys.exit(f"{name}: {tool} is missing; run bench/run-{name}, which installs it")
    if not (VENV / "l4lb").exists():
        sys.exit(f"{name}: .venv/bin/l4lb is missing; run ./scripts/setup (bench/run-{name} does)")
    prepare_process(pin)


def run_bench(
    title: str,
    versions: Callable[[], str],
    settings: str,
    make: Callable[[Path], object],
    steps: Callable[[object], Iterable[tuple[str, Callable[[], object]]]],
    report: Callable[[object], str],
    tmp_prefix: str,
    commit_paths: tuple[str, ...] = ("l4lb",),
    machine_note: str = "",
    json_keys: tuple[str, ...] = ("results", "notes"),
) -> int:
    """The report header, then `make(tmp)` (a bench with `procs`, `notes` and `results`) and
    its `steps`, (label, function) pairs: a RuntimeError in one is a note (after "label: ")
    and the run goes on. Every process is stopped at the end, on error and on signals. Then
    the report on stdout and, with BENCH_JSON, the bench's `json_keys` in that file."""
    started = now_utc()
    header = [
        f"# {title}",
        "",
        f"- date: {started:%Y-%m-%d %H:%M} UTC",
        f"- commit: {commit(commit_paths)}",
        f"- machine: {machine()}{machine_note}",
        versions(),
        f"- settings: {settings}",
        "",
        "",
    ]
    log("\n".join(header[2:-1]))
    tmp = Path(tempfile.mkdtemp(prefix=tmp_prefix, dir=os.environ.get("BENCH_TMPDIR") or None))
    bench = make(tmp)
    failed = False
    try:
        for label, step in steps(bench):
            if label:
                log(f"--- {label}")
            try:
                step()
            except RuntimeError as exc:
                bench.notes.append(f"{label}: {exc}" if label else str(exc))
                log(f"{label} failed: {exc}" if label else f"failed: {exc}")
                failed = True
    except KeyboardInterrupt as exc:
        log(f"interrupted ({exc}); stopping everything")
        bench.procs.stop_all()
        return 130
    finally:
        bench.procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    elapsed = (now_utc() - started).total_seconds()
    print("\n".join(header) + report(bench) + f"\nRun time: {elapsed:.0f}s\n")
    if os.environ.get("BENCH_JSON"):
        data = {key: getattr(bench, key) for key in json_keys}
        Path(os.environ["BENCH_JSON"]).write_text(json.dumps(data, indent=2))
    return 1 if failed else 0
