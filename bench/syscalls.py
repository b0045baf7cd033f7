"""System calls per proxied TCP connection: l4lb beside HAProxy, counted with strace.

    .venv/bin/python bench/syscalls.py [N]        # N connections per proxy (default 2000)
    .venv/bin/python bench/syscalls.py --trace     # also print the calls of one connection

Counts do not depend on the machine's load (unlike req/s), so this runs on a busy box. For
each proxy: start it on a free port in front of an echo backend (a separate process, not
traced), attach `strace -f -c` to it, open N connections one after the other (each sends 32
bytes, reads the echo to EOF: the backend closes after echoing, as an HTTP server does
with `Connection: close`), detach, and divide each system call's count by N. The idle loop's
own calls (timers, about one epoll_wait a second) are in the counts too; they are noise at
this N. Before tracing, ROUNDS (5) rounds of N more connections measure the proxy's CPU
time per connection (utime+stime from /proc, 10 ms ticks), the least of the rounds kept:
a loaded machine inflates CPU time, so this figure is noisy where the counts are not.
With `--trace`, one more connection is traced call by call (`strace -f -e trace=all`) and
printed, to see the sequence. `--no-haproxy` measures l4lb alone. `--callgrind` counts
user-space instructions per connection instead (valgrind; slow, but a count).

Environment: L4LB_LOOP=asyncio measures l4lb on the standard loop instead of uvloop.
"""

from __future__ import annotations

import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import VENV, free_port, haproxy_config, l4lb_config

PAYLOAD = b"x" * 32
ROUNDS = int(os.environ.get("ROUNDS", "5"))


def echo_backend(port: int) -> None:
    """Accept, echo what arrives, close after the first read (a one-shot server)."""
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", port))
    lsock.listen(1024)
    sel = selectors.DefaultSelector()
    sel.register(lsock, selectors.EVENT_READ)
    while True:
        for key, _ in sel.select():
            sock = key.fileobj
            if sock is lsock:
                conn, _ = lsock.accept()
                conn.setblocking(False)
                sel.register(conn, selectors.EVENT_READ)
                continue
            try:
                data = sock.recv(65536)
                if data:
                    sock.sendall(data)
            except OSError:
                pass
            sel.unregister(sock)
            sock.close()


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port}")


def one_connection(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(PAYLOAD)
        got = b""
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            got += chunk
        if got != PAYLOAD:
            raise SystemExit(f"echo through the proxy returned {got!r}")


def parse_summary(text: str) -> dict[str, int]:
    """strace -c's table: syscall name -> calls (errors are counted among the calls)."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        cols = line.split()
        if len(cols) < 5 or not re.match(r"^[\d.]+$", cols[0]) or cols[-1] == "total":
            continue
        calls = int(cols[3])
        counts[cols[-1]] = counts.get(cols[-1], 0) + calls
    return counts


def errors_of(text: str) -> dict[str, int]:
    errs: dict[str, int] = {}
    for line in text.splitlines():
        cols = line.split()
        if len(cols) == 6 and re.match(r"^[\d.]+$", cols[0]) and cols[-1] != "total":
            errs[cols[-1]] = int(cols[4])
    return errs


def strace_attach(pid: int, out: Path, extra: list[str]) -> subprocess.Popen:
    proc = subprocess.Popen(
        ["strace", "-f", "-qq", "-o", str(out), *extra, "-p", str(pid)],
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)  # strace attaches to every thread before returning control
    return proc


def strace_detach(proc: subprocess.Popen) -> None:
    time.sleep(0.3)  # the proxy closes its side after the client's last read
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)


def callgrind(name: str, argv: list[str], port: int, n: int, tmp: Path) -> float:
    """User-space instructions per connection (valgrind's callgrind, counting only while
    connections are made): a count, unlike CPU time, that the machine's load leaves alone.
    Two windows, of n/4 and n connections; their difference divided by 3n/4."""
    out = tmp / f"{name}.callgrind"
    argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    proxy = subprocess.Popen(
        [*argv, *argv_of[name]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    ctl = ["callgrind_control"]
    try:
        wait_port(port, timeout=300)
        for _ in range(50):
            one_connection(port)
        totals = []
        for count in (n // 4, n):
            for dump in tmp.glob(out.name + ".*"):
                dump.unlink()
            subprocess.run([*ctl, "-z", str(proxy.pid)], check=True, capture_output=True)
            subprocess.run([*ctl, "-i", "on", str(proxy.pid)], check=True, capture_output=True)
            for _ in range(count):
                one_connection(port)
            time.sleep(0.5)
            subprocess.run([*ctl, "-i", "off", str(proxy.pid)], check=True, capture_output=True)
            subprocess.run([*ctl, "-d", str(proxy.pid)], check=True, capture_output=True)
            total = 0
            for dump in tmp.glob(out.name + ".*"):
                for line in dump.read_text(errors="replace").splitlines():
                    if line.startswith(("summary:", "totals:")):
                        total = max(total, int(line.split()[1]))
            totals.append(total)
        print(f"{name}: callgrind profile of the last window in {tmp}", file=sys.stderr)
        return (totals[1] - totals[0]) / (n - n // 4)
    finally:
        proxy.terminate()
        try:
            proxy.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proxy.kill()


argv_of: dict[str, list[str]] = {}


def measure(name: str, argv: list[str], port: int, n: int, tmp: Path, trace: bool) -> dict:
    if "--callgrind" in sys.argv:
        argv_of[name] = argv
        return {"counts": {}, "errors": {}, "cpu": 0.0, "ir": callgrind(name, argv, port, n, tmp)}
    proxy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        for _ in range(50):  # warm up (pipes, free lists, first-use code paths)
            one_connection(port)
        cpus = []
        for _ in range(ROUNDS):  # untraced: the proxy's own CPU time per connection
            cpu0 = cpu_seconds(proxy.pid)
            for _ in range(n):
                one_connection(port)
            cpus.append((cpu_seconds(proxy.pid) - cpu0) / n)
        cpu = min(cpus)  # load on the machine inflates CPU time, never deflates it
        out = tmp / f"{name}.count"
        st = strace_attach(proxy.pid, out, ["-c"])
        for _ in range(n):
            one_connection(port)
        strace_detach(st)
        text = out.read_text()
        result = {"counts": parse_summary(text), "errors": errors_of(text), "cpu": cpu}
        if trace:
            out = tmp / f"{name}.trace"
            st = strace_attach(proxy.pid, out, ["-e", "trace=all", "-e", "signal=none"])
            one_connection(port)
            strace_detach(st)
            lines = out.read_text().splitlines()
            result["trace"] = [ln for ln in lines if "epoll_wait(" not in ln or "= 0" not in ln]
        return result
    finally:
        proxy.terminate()
        try:
            proxy.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proxy.kill()


def table(results: dict[str, dict], n: int) -> str:
    names = sorted(
        {s for r in results.values() for s in r["counts"]},
        key=lambda s: -max(r["counts"].get(s, 0) for r in results.values()),
    )
    cols = list(results)
    lines = ["| system call | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for s in names:
        cells = []
        for c in cols:
            calls = results[c]["counts"].get(s, 0)
            errs = results[c]["errors"].get(s, 0)
            cell = f"{calls / n:.2f}" if calls else "-"
            if errs:
                cell += f" ({errs / n:.2f} fail)"
            cells.append(cell)
        if all(c == "-" or c.startswith("0.00") for c in cells):
            continue
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    totals = [f"**{sum(results[c]['counts'].values()) / n:.1f}**" for c in cols]
    lines.append("| **all** | " + " | ".join(totals) + " |")
    cpu = [f"{results[c]['cpu'] * 1e6:.0f}" for c in cols]
    label = "proxy CPU µs per connection (untraced, least of the rounds)"
    lines.append(f"| {label} | " + " | ".join(cpu) + " |")
    return "\n".join(lines)


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    trace = "--trace" in sys.argv
    n = int(args[0]) if args else 2000
    if not shutil.which("strace"):
        raise SystemExit("strace is not installed")
    tmp = Path(tempfile.mkdtemp(prefix="l4lb-syscalls-"))
    backend = free_port()
    echo = subprocess.Popen([sys.executable, __file__, "--echo", str(backend)])
    results: dict[str, dict] = {}
    try:
        wait_port(backend)
        port = free_port()
        cfg = tmp / "l4lb.toml"
        cfg.write_text(l4lb_config(port, backend, workers=1))  # one process: one trace
        argv = [str(VENV / "python"), "-m", "l4lb", "up", str(cfg), "--no-access-log", "--no-tui"]
        loop = os.environ.get("L4LB_LOOP") or "uvloop"
        results[f"l4lb ({loop})"] = measure("l4lb", argv, port, n, tmp, trace)
        if shutil.which("haproxy") and "--no-haproxy" not in sys.argv:
            port = free_port()
            cfg = tmp / "haproxy.cfg"
            cfg.write_text(haproxy_config(port, backend))
            results["haproxy"] = measure(
                "haproxy", ["haproxy", "-db", "-f", str(cfg)], port, n, tmp, trace
            )
    finally:
        echo.terminate()
        echo.wait(timeout=10)
    if "--callgrind" in sys.argv:
        for name, r in results.items():
            print(f"{name}: {r['ir']:,.0f} user-space instructions per proxied connection")
        return
    print(f"System calls per proxied connection ({n} connections, strace -f -c)\n")
    print(table(results, n))
    if trace:
        for name, r in results.items():
            print(f"\n{name}: one connection, call by call\n")
            print("\n".join(r["trace"]))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--echo":
        echo_backend(int(sys.argv[2]))
    else:
        main()
