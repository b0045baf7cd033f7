"""The HTTP/3 benchmark (issue 11), started by bench/run-h3.

The targets serve HTTP/3 on UDP 127.0.0.1, each pinned to BENCH_PROXY_CPU:
- `l4lb`: an `https` listener with `http3 = true`, forwarding over HTTP/1.1 with keep-alive
  to a 1-worker nginx (the backend, on BENCH_LOAD_CPU); `l4lb-compiled` the same from
  scripts/build-compiled's build (what `scripts/up` runs; run-h3 builds it when asked for);
- `caddy`: Debian's Caddy, `reverse_proxy` to the same nginx, `protocols h3` (quic-go);
- `direct`: aioquic answering by itself (bench/h3_direct.py, aioquic's example server without
  its demo app): no proxying, the ceiling of an aioquic-based server.
Two measures: `small` (requests/s of a 32-byte file, BENCH_H3_PROCS client processes, each
with BENCH_H3_CONNS connections of BENCH_H3_STREAMS streams in flight) and `download` (one
10 MB file, BENCH_H3_DOWNLOAD bytes, on one connection: MB/s). The client is
bench/h3load.py (aioquic; Debian's h2load has no QUIC) on BENCH_LOAD_CPU, so it may well be
the bottleneck: the report gives the server's CPU use and CPU-ms per request, which stay
meaningful when it is. Ratios: l4lb / direct and l4lb / caddy (targets: >= 1 and >= 0.5),
for each l4lb build that ran.

Environment: BENCH_SECONDS (5), BENCH_ROUNDS (3), BENCH_TARGETS (direct,l4lb,caddy; or
l4lb-compiled),
BENCH_TESTS (small,download), BENCH_H3_PROCS (3), BENCH_H3_CONNS (2), BENCH_H3_STREAMS (10),
BENCH_H3_DOWNLOAD (10485760), BENCH_PROXY_CPU/BENCH_LOAD_CPU (0/1).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import common
from common import LOAD_CPU, PROXY_CPU, VENV, Procs, env_int, env_list, free_port, log

TARGETS = env_list(
    "BENCH_TARGETS", ("direct", "l4lb", "l4lb-compiled", "caddy"), ("direct", "l4lb", "caddy")
)
TESTS = env_list("BENCH_TESTS", ("small", "download"))
SECONDS = common.env_float("BENCH_SECONDS", 5.0)
ROUNDS = env_int("BENCH_ROUNDS", 3)
PROCS = env_int("BENCH_H3_PROCS", 3)
CONNS = env_int("BENCH_H3_CONNS", 2)
STREAMS = env_int("BENCH_H3_STREAMS", 10)
DOWNLOAD = env_int("BENCH_H3_DOWNLOAD", 10 << 20)
HERE = Path(__file__).resolve().parent
COMPILED = HERE.parent / "build" / "compiled"  # scripts/build-compiled's tree
OURS = ("l4lb", "l4lb-compiled")


def udp_bound(port: int) -> bool:
    want = f":{port:04X}"
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        if any(line.split()[1].endswith(want) for line in lines):
            return True
    return False


def caddy_config(port: int, backend: int, cert: Path, key: Path) -> str:
    return f"""{{
    admin off
    auto_https off
    servers {{
        protocols h1 h2 h3
    }}
}}

https://127.0.0.1:{port} {{
    tls {cert} {key}
    reverse_proxy 127.0.0.1:{backend}
}}
"""


class Bench:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs = Procs(tmp)
        self.notes: list[str] = []
        self.results: dict[str, dict[str, dict]] = {}  # test -> target -> medians
        self.cert, self.key = tmp / "bench.crt", tmp / "bench.key"
        self.www = tmp / "www"
        self.backend = 0

    def setup(self) -> None:
        run = subprocess.run(
            [
                str(VENV / "l4lb"),
                "cert",
                "selfsigned",
                "--cert",
                str(self.cert),
                "--key",
                str(self.key),
                "--name",
                "localhost",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if run.returncode != 0:
            raise RuntimeError(f"l4lb cert selfsigned failed: {run.stderr.strip()[-300:]}")
        files = {"index.html": common.SMALL_FILE["index.html"], "big": b"b" * DOWNLOAD}
        _, self.backend = common.start_http_backend(self.procs, self.tmp, LOAD_CPU, files)

    def start(self, target: str) -> tuple[common.Proc, int]:
        port = free_port()
        cwd = None
        if target in OURS:
            listener = (
                f'\n[[listener.bench.certs]]\ncert = "{self.cert}"\nkey = "{self.key}"\n'
                "\n[listener.bench.http]\nhttp3 = true\nmax_requests = 10000000\n"
                "quic_max_streams = 1000\n"
            )
            cfg = self.tmp / "l4lb.toml"
            cfg.write_text(common.l4lb_config(port, self.backend, "https", 1, listener))
            venv = VENV if target == "l4lb" else COMPILED / ".venv" / "bin"
            argv = [str(venv / "l4lb"), "up", str(cfg)]
            cwd = None if target == "l4lb" else COMPILED
        elif target == "caddy":
            cfg = self.tmp / "Caddyfile"
            cfg.write_text(caddy_config(port, self.backend, self.cert, self.key))
            argv = ["caddy", "run", "--adapter", "caddyfile", "--config", str(cfg)]
        else:
            argv = [
                str(VENV / "python"),
                str(HERE / "h3_direct.py"),
                "--port",
                str(port),
                "--cert",
                str(self.cert),
                "--key",
                str(self.key),
                "--root",
                str(self.www),
            ]
        env = dict(os.environ, GOMAXPROCS="1") if target == "caddy" else None  # as run-h2
        proc = self.procs.start(target, argv, PROXY_CPU, env=env, cwd=cwd)
        deadline = time.monotonic() + 15
        while not udp_bound(port):
            if not proc.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{target} did not bind UDP {port}: {proc.stderr_tail()}")
            time.sleep(0.05)
        time.sleep(0.3)  # (Caddy binds before it is ready)
        return proc, port

    def sample(self, proc: common.Proc, port: int, test: str) -> dict:
        download = test == "download"
        url = f"https://127.0.0.1:{port}/" + ("big" if download else "index.html")
        argv = [
            str(VENV / "python"),
            str(HERE / "h3load.py"),
            url,
            "--seconds",
            str(SECONDS),
            "--conns",
            str(1 if download else CONNS),
            "--streams",
            str(STREAMS),
        ]
        argv += ["--download"] if download else []
        cpu0 = common.cpu_seconds(proc.pid)
        clients = [
            subprocess.Popen(
                ["taskset", "-c", str(LOAD_CPU), *argv],
                stdout=subprocess.PIPE,
                text=True,
                preexec_fn=common.child_setup,
            )
            for _ in range(1 if download else PROCS)
        ]
        outs = []
        for c in clients:
            out, _ = c.communicate(timeout=SECONDS * 4 + 120)
            if c.returncode != 0:
                raise RuntimeError(f"h3load exited with {c.returncode}")
            outs.append(json.loads(out))
        server_cpu = common.cpu_seconds(proc.pid) - cpu0
        requests = sum(o["requests"] for o in outs)
        seconds = max(o["seconds"] for o in outs)
        return {
            "rate": requests / seconds if seconds else 0.0,
            "mb_s": sum(o["bytes"] for o in outs) / seconds / 1e6 if seconds else 0.0,
            "errors": sum(o["errors"] for o in outs),
            "server_cpu_ms_per_req": server_cpu / requests * 1e3 if requests else None,
            "server_cpu_share": server_cpu / seconds if seconds else 0.0,
            "client_cpu_share": sum(o["cpu"] for o in outs) / seconds if seconds else 0.0,
        }

    def run_target(self, target: str) -> None:
        proc, port = self.start(target)
        try:
            for test in TESTS:
                samples = [self.sample(proc, port, test) for _ in range(ROUNDS)]
                med = {
                    k: statistics.median(s[k] for s in samples if s[k] is not None)
                    if any(s[k] is not None for s in samples)
                    else None
                    for k in samples[0]
                }
                self.results.setdefault(test, {})[target] = med
                log(f"{target} {test}: {med}")
        finally:
            self.procs.stop(proc)


def report(bench: Bench) -> str:
    lines = []
    for test in TESTS:
        got = bench.results.get(test, {})
        what = "req/s" if test == "small" else "MB/s"
        key = "rate" if test == "small" else "mb_s"
        lines += [
            f"## {test} ({what})",
            "",
            f"| target | {what} | errors | server CPU | client CPU | server CPU ms/req |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for target in TARGETS:
            r = got.get(target)
            if r is None:
                lines.append(f"| {target} | - | - | - | - | - |")
                continue
            lines.append(
                f"| {target} | {common.fmt(r[key], '.1f')} | {r['errors']:.0f} | "
                f"{r['server_cpu_share']:.0%} | {r['client_cpu_share']:.0%} | "
                f"{common.fmt(r['server_cpu_ms_per_req'], '.3f')} |"
            )
        for ours in OURS:
            l4 = got.get(ours, {}).get(key)
            if l4 is None:
                continue
            for other in ("direct", "caddy"):
                theirs = got.get(other, {}).get(key)
                lines.append(f"\n{ours} / {other}: {common.ratio(l4, theirs)}")
        lines.append("")
    lines += [
        "A client CPU near 100% means the client, not the server, set the rate: compare",
        "server CPU ms per request then.",
        "",
    ]
    return "\n".join(lines + common.notes_lines(bench.notes))


def main() -> int:
    common.check_setup("h3", __doc__, ("caddy", "taskset"))
    if "l4lb-compiled" in TARGETS and not (COMPILED / ".venv" / "bin" / "l4lb").exists():
        sys.exit("h3: no compiled build; run scripts/build-compiled (bench/run-h3 does)")
    settings = (
        f"{SECONDS:g}s x {ROUNDS} rounds, {PROCS} client processes x {CONNS} "
        f"connections x {STREAMS} streams; download {DOWNLOAD} B"
    )

    def steps(b: Bench):
        yield "setup", b.setup
        for target in TARGETS:
            yield target, lambda t=target: b.run_target(t)

    def versions() -> str:
        return f"{common.l4lb_version()}\n- caddy: {common.first_line(['caddy', 'version'])}"

    return common.run_bench(
        "HTTP/3 benchmark",
        versions,
        settings,
        Bench,
        steps,
        report,
        "h3bench-",
        commit_paths=("l4lb", "l7", "quic"),
    )


if __name__ == "__main__":
    sys.exit(main())
