"""CPU per keep-alive request on an `https` listener (and on `http`, for the TLS share).

    .venv/bin/python bench/https_cpu.py [N]           # N requests per round (default 20000)
    .venv/bin/python bench/https_cpu.py --profile     # also cProfile l4lb over one round
    .venv/bin/python bench/https_cpu.py --strace      # also strace -c one round

What it measures is l4lb's own CPU time (utime+stime from /proc) per request, not req/s, so
it can run on a shared machine: a client process (`--client`, Python `ssl` and selectors)
keeps CONNS (16, fewer than a pool's default `max_idle`, so no upstream connection is
reopened) keep-alive connections busy with one request each in flight, through l4lb
(`workers = 1`, no access log) to a 1-worker nginx serving 100 bytes. ROUNDS (5) rounds
of N requests; the least CPU per request is kept (load on the machine only inflates it).
`--profile` runs l4lb under cProfile for one round instead (slower, but it shows where the
time goes; the profile's top lines are printed).
"""

from __future__ import annotations

import os
import pstats
import selectors
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import VENV, free_port, l4lb_config, nginx_backend_config
from syscalls import cpu_seconds, parse_summary, wait_port

CONNS = int(os.environ.get("CONNS", "16"))
ROUNDS = int(os.environ.get("ROUNDS", "5"))
BODY = b"x" * 99 + b"\n"
REQ = b"GET /index.html HTTP/1.1\r\nHost: localhost\r\n\r\n"


def client(port: int, tls: bool, total: int) -> None:
    """`total` requests over CONNS connections, one in flight on each; exits 0 when done."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    sel = selectors.DefaultSelector()
    per = total // CONNS
    left: dict[socket.socket, int] = {}
    seen: dict[socket.socket, bytes] = {}
    for _ in range(CONNS):
        s = socket.create_connection(("127.0.0.1", port))
        if tls:
            s = ctx.wrap_socket(s)
        s.setblocking(False)
        left[s], seen[s] = per, b""
        sel.register(s, selectors.EVENT_READ)
        s.send(REQ)
    deadline = time.monotonic() + 120
    while left and time.monotonic() < deadline:
        for key, _ in sel.select(1):
            s = key.fileobj  # type: ignore[assignment]
            try:
                data = s.recv(65536)
            except (ssl.SSLWantReadError, BlockingIOError):
                continue
            if not data:
                raise SystemExit("the proxy closed a connection")
            buf = seen[s] + data
            done = buf.count(BODY)
            seen[s] = buf[buf.rfind(BODY) + len(BODY) :] if done else buf
            left[s] -= done
            if left[s] > 0:
                s.send(REQ)
            else:
                sel.unregister(s)
                del left[s]
    if left:
        raise SystemExit("requests left unanswered")


def run_client(port: int, tls: bool, n: int) -> None:
    subprocess.run(
        [sys.executable, __file__, "--client", str(port), "1" if tls else "0", str(n)],
        check=True,
        timeout=180,
    )


def instructions(pid: int, port: int, tls: bool, n: int, out: Path) -> float:
    """User-space instructions l4lb executes per request (valgrind's callgrind): a count, so
    the machine's load does not change it. Two client runs, of n/4 and of n requests, each
    opening its CONNS connections; the difference divided by 3n/4 leaves the handshakes out."""
    ctl = ["callgrind_control"]
    totals = []
    for count in (n // 4, n):
        for dump in out.parent.glob(out.name + ".*"):
            dump.unlink()
        subprocess.run([*ctl, "-z", str(pid)], check=True, capture_output=True)
        subprocess.run([*ctl, "-i", "on", str(pid)], check=True, capture_output=True)
        run_client(port, tls, count)
        subprocess.run([*ctl, "-i", "off", str(pid)], check=True, capture_output=True)
        subprocess.run([*ctl, "-d", str(pid)], check=True, capture_output=True)
        total = 0
        for dump in out.parent.glob(out.name + ".*"):
            for line in dump.read_text(errors="replace").splitlines():
                if line.startswith(("summary:", "totals:")):
                    total = max(total, int(line.split()[1]))
        totals.append(total)
    return (totals[1] - totals[0]) / (n - n // 4)


def make_cert(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "ec.crt", tmp / "ec.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=lh",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    n = int(args[0]) if args else 20000
    profile, strace = "--profile" in sys.argv, "--strace" in sys.argv
    callgrind = "--callgrind" in sys.argv
    tmp = Path(tempfile.mkdtemp(prefix="l4lb-https-cpu-"))
    www = tmp / "www"
    www.mkdir()
    (www / "index.html").write_bytes(BODY)
    backend = free_port()
    (tmp / "nginx.conf").write_text(nginx_backend_config(tmp, backend, www))
    nginx = subprocess.Popen(
        ["nginx", "-e", "stderr", "-p", str(tmp), "-c", str(tmp / "nginx.conf")],
        stderr=subprocess.DEVNULL,
    )
    cert, key = make_cert(tmp)
    procs: list[subprocess.Popen] = []
    try:
        wait_port(backend)
        for protocol in ("https",) if "--https-only" in sys.argv else ("https", "http"):
            port = free_port()
            certs = f'\n[[listener.bench.certs]]\ncert = "{cert}"\nkey = "{key}"\n'
            cfg = tmp / f"{protocol}.toml"
            extra = certs if protocol == "https" else ""
            cfg.write_text(l4lb_config(port, backend, protocol, workers=1, listener=extra))
            argv = [str(VENV / "l4lb"), "up", str(cfg), "--no-access-log", "--no-tui"]
            if profile:
                out = tmp / f"{protocol}.prof"
                argv = [str(VENV / "python"), "-m", "cProfile", "-o", str(out), "-m", "l4lb"]
                argv += ["up", str(cfg), "--no-access-log", "--no-tui"]
            if callgrind:
                out = tmp / f"{protocol}.callgrind"
                argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no"]
                argv += [f"--callgrind-out-file={out}", str(VENV / "python"), "-m", "l4lb"]
                argv += ["up", str(cfg), "--no-access-log", "--no-tui"]
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(proc)
            wait_port(port, timeout=300 if callgrind else 15)
            tls = protocol == "https"
            run_client(port, tls, 320)  # warm-up: connections to the server, code paths
            if callgrind:
                ir = instructions(proc.pid, port, tls, n, out)
                print(f"{protocol}: {ir:,.0f} user-space instructions of l4lb per request")
                if "--annotate" in sys.argv:
                    for dump in sorted(out.parent.glob(out.name + ".*")):
                        ann = subprocess.run(
                            ["callgrind_annotate", "--threshold=90", str(dump)],
                            capture_output=True,
                            text=True,
                            check=False,
                        )
                        print("\n".join(ann.stdout.splitlines()[:60]))
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=120)
                continue
            if profile:
                run_client(port, tls, n)
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
                print(f"\n## {protocol}: cProfile over {n} requests (+320 warm-up)\n")
                stats = pstats.Stats(str(out))
                stats.sort_stats("tottime").print_stats(25)
                continue
            cpus = []
            for _ in range(ROUNDS):
                c0 = cpu_seconds(proc.pid)
                run_client(port, tls, n)
                cpus.append((cpu_seconds(proc.pid) - c0) / n)
            print(f"{protocol}: {min(cpus) * 1e6:.1f} µs of l4lb CPU per request", end="")
            print(f" (rounds: {', '.join(f'{c * 1e6:.1f}' for c in cpus)})")
            if "--perf" in sys.argv:  # software-clock samples: works in VMs without PMU
                data = tmp / f"{protocol}.perf"
                rec = subprocess.Popen(
                    [
                        "perf",
                        "record",
                        "-q",
                        "-e",
                        "cpu-clock",
                        "-F",
                        "2000",
                        "-o",
                        str(data),
                        "-p",
                        str(proc.pid),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                time.sleep(0.5)
                run_client(port, tls, n)
                rec.send_signal(signal.SIGINT)
                rec.wait(timeout=60)
                rep = subprocess.run(
                    [
                        "perf",
                        "report",
                        "-i",
                        str(data),
                        "--no-children",
                        "--sort",
                        "dso",
                        "--stdio",
                        "-q",
                        "--percent-limit",
                        "0.5",
                    ],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                print(rep.stdout)
            if strace:
                st_out = tmp / f"{protocol}.strace"
                st = subprocess.Popen(
                    ["strace", "-f", "-qq", "-c", "-o", str(st_out), "-p", str(proc.pid)],
                    stderr=subprocess.DEVNULL,
                )
                time.sleep(1.0)
                run_client(port, tls, n)
                st.send_signal(signal.SIGINT)
                st.wait(timeout=30)
                counts = parse_summary(st_out.read_text())
                top = sorted(counts.items(), key=lambda kv: -kv[1])[:10]
                print("  syscalls per request: " + ", ".join(f"{k} {v / n:.2f}" for k, v in top))
            proc.terminate()
            proc.wait(timeout=30)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        nginx.terminate()
        nginx.wait(timeout=10)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--client":
        client(int(sys.argv[2]), sys.argv[3] == "1", int(sys.argv[4]))
    else:
        main()
