"""100,000 concurrent proxied TCP connections through one l4lb instance (issue 14, item 5).

Run it through `bench/run-conns100k` (root: it sets kernel settings for the run). It:

1. sets the kernel settings below for its duration and puts the old values back at the end;
2. starts BACKENDS echo servers (`echo` below: one epoll loop per process, each on its own
   port, so that l4lb's connections to them come from one address but go to BACKENDS
   destinations and the ports suffice);
3. starts l4lb with a `tcp` listener and enough `workers` that none needs more than about
   80% of FD_LIMIT descriptors (2 per connection), one pool of the backends (`least_conn`);
4. opens CONNS connections through it from CLIENTS processes (`client` below), each bound to
   its own 127.0.0.x source address (IP_BIND_ADDRESS_NO_PORT: the port is picked at connect
   time, per destination), a window of WINDOW connects in flight each; a connection counts
   once a byte it sent came back through the proxy;
5. measures l4lb's memory (RSS and PSS summed over the supervisor and its workers, from
   /proc/PID/smaps_rollup) before and after, divided by the connections held;
6. an accept storm on top of those: one more client issues STORM connects at once (every
   connect() before the first poll) and counts what failed, beside the kernel's listen-queue
   counters (/proc/net/netstat);
7. checks that every one of the CONNS connections still echoes a byte;
8. the same memory measure for HAProxy (one process, `nbthread 1`, no `maxconn` in `global`,
   so it sizes maxconn from the fd limit itself: the largest count one process holds here)
   and for l4lb `workers = 1` at the same count.

Kernel settings (net.* are per network namespace; fs.* are global):
- net.core.somaxconn -> 65535: the cap on every listen() backlog; the default 4096 would
  cut a listener's backlog of 65535, and a storm fills accept queues faster than they drain;
- net.ipv4.tcp_max_syn_backlog -> 65535: half-open connections per listener; past it the
  kernel answers with SYN cookies (which drop TCP options) or drops SYNs;
- net.ipv4.ip_local_port_range -> "1024 65535": ephemeral ports per (source, destination)
  pair, 28,232 by default; the clients and l4lb stay under that by spreading sources and
  backends, this is headroom;
- fs.file-max, fs.nr_open: raised only if below what the run needs (every process's fds in
  all, and FD_LIMIT; here they are 2.4 M and 1 M already);
- RLIMIT_NOFILE (ulimit -n) = FD_LIMIT, soft and hard, for every process started here.

Subcommands (used by the run itself):
    python bench/conns100k.py echo PORT
    python bench/conns100k.py client SRC_IP PORT N WINDOW
"""

from __future__ import annotations

import errno
import json
import math
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    ROOT,
    VENV,
    Proc,
    Procs,
    commit,
    env_int,
    env_list,
    free_port,
    log,
    machine,
    now_utc,
    on_signal,
    tree,
    wait_listening,
)

CONNS = env_int("BENCH_CONNS", 100_000)
STORM = env_int("BENCH_STORM", 10_000)
FD_LIMIT = env_int("BENCH_FD_LIMIT", 20_000)
BACKENDS = env_int("BENCH_BACKENDS", 8)
CLIENTS = env_int("BENCH_CLIENTS", 8)
WINDOW = env_int("BENCH_WINDOW", 256)
WORKERS = env_int("BENCH_WORKERS", 0)  # 0: computed from CONNS, STORM and FD_LIMIT
TARGETS = env_list("BENCH_TARGETS", ("l4lb", "haproxy", "l4lb-1"))
CONNECT_TIMEOUT = 60.0  # seconds for one connection to echo its first byte
IP_BIND_ADDRESS_NO_PORT = 24

SYSCTLS = {
    "net/core/somaxconn": "65535",
    "net/ipv4/tcp_max_syn_backlog": "65535",
    "net/ipv4/ip_local_port_range": "1024\t65535",
}


# -- the echo backend ------------------------------------------------------------------------


def echo(port: int) -> None:
    """Echo whatever arrives, on every connection, forever: one level-triggered epoll."""
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", port))
    lsock.listen(65535)
    lsock.setblocking(False)
    ep = select.epoll()
    lfd = lsock.fileno()
    ep.register(lfd, select.EPOLLIN)
    conns: dict[int, socket.socket] = {}
    while True:
        for fd, _ev in ep.poll(1.0, 1024):
            if fd == lfd:
                while True:
                    try:
                        conn, _ = lsock.accept()
                    except BlockingIOError:
                        break
                    except OSError as exc:  # out of descriptors: say so, keep going
                        print(f"echo {port}: accept: {exc}", file=sys.stderr, flush=True)
                        break
                    conn.setblocking(False)
                    conns[conn.fileno()] = conn
                    ep.register(conn.fileno(), select.EPOLLIN)
                continue
            conn = conns.get(fd)
            if conn is None:
                continue
            try:
                data = conn.recv(4096)
                if data:
                    conn.send(data)
                    continue
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                pass
            ep.unregister(fd)
            del conns[fd]
            conn.close()


# -- the client ------------------------------------------------------------------------------


def _count(errors: dict[str, int], why: str) -> None:
    errors[why] = errors.get(why, 0) + 1


def open_conns(src: str, port: int, n: int, window: int) -> tuple[list[socket.socket], dict]:
    """Open `n` connections from `src` to 127.0.0.1:`port`, `window` in flight at most (`n`:
    all connects issued before the first poll). Each is established once its byte echoed."""
    ep = select.epoll()
    held: list[socket.socket] = []
    errors: dict[str, int] = {}
    pending: dict[int, tuple[socket.socket, float, bool]] = {}  # fd -> sock, deadline, sent
    started = issued = 0
    t0 = time.monotonic()
    while issued < n or pending:
        while issued < n and len(pending) < window:
            issued += 1
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                s.bind((src, 0))
                err = s.connect_ex(("127.0.0.1", port))
            except OSError as exc:
                err = exc.errno or -1
            if err not in (0, errno.EINPROGRESS):
                _count(errors, errno.errorcode.get(err, str(err)))
                s.close()
                continue
            started += 1
            pending[s.fileno()] = (s, time.monotonic() + CONNECT_TIMEOUT, False)
            ep.register(s.fileno(), select.EPOLLOUT)
        for fd, ev in ep.poll(0.2, 4096):
            s, deadline, sent = pending[fd]
            if ev & (select.EPOLLERR | select.EPOLLHUP) and not ev & select.EPOLLIN:
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                _count(errors, errno.errorcode.get(err, "hangup") if err else "hangup")
            elif not sent:
                try:
                    s.send(b"x")
                    pending[fd] = (s, deadline, True)
                    ep.modify(fd, select.EPOLLIN)
                    continue
                except OSError as exc:
                    _count(errors, errno.errorcode.get(exc.errno or 0, type(exc).__name__))
            else:
                try:
                    data = s.recv(16)
                except OSError as exc:
                    data = None
                    _count(errors, errno.errorcode.get(exc.errno or 0, type(exc).__name__))
                if data == b"x":
                    ep.unregister(fd)
                    del pending[fd]
                    held.append(s)
                    continue
                if data is not None:
                    _count(errors, "closed" if not data else "unexpected_data")
            ep.unregister(fd)
            del pending[fd]
            s.close()
        now = time.monotonic()
        for fd in [fd for fd, (_, d, _) in pending.items() if d < now]:
            s = pending.pop(fd)[0]
            ep.unregister(fd)
            s.close()
            _count(errors, "timeout")
    ep.close()
    result = {
        "established": len(held),
        "failed": n - len(held),
        "errors": errors,
        "seconds": round(time.monotonic() - t0, 2),
    }
    return held, result


def check_conns(held: list[socket.socket]) -> dict:
    """Send one byte on every held connection at once; count those that echo it."""
    ep = select.epoll()
    by_fd: dict[int, socket.socket] = {}
    errors: dict[str, int] = {}
    for s in held:
        try:
            s.send(b"y")
        except OSError as exc:
            _count(errors, errno.errorcode.get(exc.errno or 0, type(exc).__name__))
            continue
        by_fd[s.fileno()] = s
        ep.register(s.fileno(), select.EPOLLIN)
    ok = 0
    t0 = time.monotonic()
    deadline = t0 + CONNECT_TIMEOUT
    while by_fd and time.monotonic() < deadline:
        for fd, _ev in ep.poll(0.5, 4096):
            s = by_fd.pop(fd)
            ep.unregister(fd)
            try:
                data = s.recv(16)
            except OSError as exc:
                _count(errors, errno.errorcode.get(exc.errno or 0, type(exc).__name__))
                continue
            if data == b"y":
                ok += 1
            else:
                _count(errors, "closed" if not data else "unexpected_data")
    if by_fd:
        errors["timeout"] = len(by_fd)
    ep.close()
    return {
        "echoed": ok,
        "failed": len(held) - ok,
        "errors": errors,
        "seconds": round(time.monotonic() - t0, 2),
    }


def client(src: str, port: int, n: int, window: int) -> None:
    """Open, report one JSON line, then obey stdin: `check` (echo test), EOF or `quit`."""
    held, result = open_conns(src, port, n, window)
    print(json.dumps(result), flush=True)
    for line in sys.stdin:
        if line.strip() == "check":
            print(json.dumps(check_conns(held)), flush=True)
        else:
            break
    for s in held:
        s.close()


# -- measuring -------------------------------------------------------------------------------


def memory_kb(pid: int) -> dict[str, int]:
    """RSS and PSS of `pid` and its descendants (an l4lb supervisor and its workers)."""
    out = {"rss": 0, "pss": 0, "processes": 0}
    for p in tree(pid):
        try:
            text = Path(f"/proc/{p}/smaps_rollup").read_text()
        except OSError:
            continue
        out["processes"] += 1
        for line in text.splitlines():
            key, _, rest = line.partition(":")
            if key in ("Rss", "Pss"):
                out[key.lower()] += int(rest.split()[0])
    return out


def max_fds(pid: int) -> int:
    most = 0
    for p in tree(pid):
        try:
            most = max(most, len(os.listdir(f"/proc/{p}/fd")))
        except OSError:
            pass
    return most


def slab_kb() -> int:
    """The kernel's slab memory, whole machine (/proc/meminfo Slab): the sockets' own memory,
    which no RSS shows (4 sockets per proxied connection: client, proxy x2, backend)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("Slab:"):
            return int(line.split()[1])
    return 0


def listen_counters() -> dict[str, int]:
    """TcpExt counters that say a listener dropped or cookie-answered a client."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    names, values = lines[0].split()[1:], lines[1].split()[1:]
    got = dict(zip(names, map(int, values), strict=False))
    keys = ("ListenOverflows", "ListenDrops", "TCPReqQFullDrop", "SyncookiesSent")
    return {k: got.get(k, 0) for k in keys}


# -- the run ---------------------------------------------------------------------------------


class Kernel:
    """Set the run's kernel settings; `restore` puts back what was there."""

    def __init__(self) -> None:
        self.saved: dict[str, str] = {}

    def set(self, key: str, value: str) -> None:
        path = Path("/proc/sys") / key
        old = path.read_text().strip()
        if old.split() == value.split():
            return
        self.saved.setdefault(key, old)
        path.write_text(value)
        log(f"sysctl {key.replace('/', '.')}: {old!r} -> {value!r}")

    def apply(self, fds_needed: int) -> None:
        for key, value in SYSCTLS.items():
            self.set(key, value)
        if int(Path("/proc/sys/fs/nr_open").read_text()) < FD_LIMIT:
            self.set("fs/nr_open", str(FD_LIMIT))
        if int(Path("/proc/sys/fs/file-max").read_text()) < 2 * fds_needed:
            self.set("fs/file-max", str(2 * fds_needed))
        resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))  # inherited

    def restore(self) -> None:
        for key, old in reversed(self.saved.items()):
            try:
                (Path("/proc/sys") / key).write_text(old)
                log(f"sysctl {key.replace('/', '.')}: restored {old!r}")
            except OSError as exc:
                log(f"warning: could not restore {key}: {exc}")


class Run:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs = Procs(tmp, leader_only=True)
        self.backends: list[int] = []
        self.rows: list[dict] = []
        self.notes: list[str] = []
        self.storm: dict | None = None
        self.check: dict | None = None

    def start_backends(self) -> None:
        for i in range(BACKENDS):
            port = free_port()
            proc = self.procs.start(f"echo{i}", [sys.executable, __file__, "echo", str(port)])
            wait_listening(proc, port)
            self.backends.append(port)

    def start_l4lb(self, workers: int, per_worker: int) -> tuple[Proc, int]:
        port = free_port()
        servers = "".join(
            f'\n[[pool.echo.servers]]\nname = "e{i}"\naddress = "127.0.0.1:{p}"\n'
            for i, p in enumerate(self.backends)
        )
        cfg = self.tmp / f"l4lb-w{workers}.toml"
        cfg.write_text(
            f"""[global]
access_log = false
drain_timeout = "1s"
workers = {workers}

[listener.conns]
bind = "127.0.0.1:{port}"
protocol = "tcp"
pool = "echo"
max_connections = {per_worker}
backlog = 65535
idle_timeout = "1h"

[pool.echo]
balance = "least_conn"
{servers}"""
        )
        argv = [str(VENV / "l4lb"), "up", str(cfg), "--no-access-log", "--no-tui"]
        proc = self.procs.start(f"l4lb-w{workers}", argv)
        wait_listening(proc, port, timeout=60)
        deadline = time.monotonic() + 60
        while workers > 1 and len(tree(proc.pid)) < workers + 1:
            if time.monotonic() > deadline or not proc.alive():
                raise RuntimeError(f"l4lb workers did not start:\n{proc.stderr_tail()}")
            time.sleep(0.2)
        time.sleep(3.0)  # every worker listening and settled
        return proc, port

    def start_haproxy(self) -> tuple[Proc, int, int]:
        port = free_port()
        sock = self.tmp / "haproxy.sock"
        servers = "".join(f"    server e{i} 127.0.0.1:{p}\n" for i, p in enumerate(self.backends))
        cfg = self.tmp / "haproxy.cfg"
        cfg.write_text(
            f"""global
    nbthread 1
    stats socket {sock}

defaults
    mode tcp
    maxconn 1000000
    timeout connect 5s
    timeout client 1h
    timeout server 1h

listen conns
    bind 127.0.0.1:{port}
    balance leastconn
{servers}"""
        )
        proc = self.procs.start("haproxy", ["haproxy", "-db", "-f", str(cfg)])
        wait_listening(proc, port)
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(sock))
            s.sendall(b"show info\n")
            info = b""
            while chunk := s.recv(65536):
                info += chunk
        fields = dict(line.split(": ", 1) for line in info.decode().splitlines() if ": " in line)
        maxconn = int(fields["Maxconn"])
        log(
            f"haproxy: Ulimit-n {fields.get('Ulimit-n')}, Maxsock {fields.get('Maxsock')}, "
            f"Maxconn {maxconn}"
        )
        time.sleep(1.0)
        return proc, port, maxconn

    def clients(self, port: int, total: int, nproc: int, base: int, window: int) -> list:
        """Start `nproc` clients sharing `total` connections, one source address each."""
        procs = []
        for i in range(nproc):
            n = total // nproc + (1 if i < total % nproc else 0)
            argv = [
                sys.executable,
                __file__,
                "client",
                f"127.0.0.{base + i}",
                str(port),
                str(n),
                str(window),
            ]
            procs.append(
                self.procs.start(
                    f"client{base + i}",
                    argv,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        return procs

    @staticmethod
    def read(proc: Proc) -> dict:
        assert proc.popen.stdout is not None
        line = proc.popen.stdout.readline()
        if not line:
            raise RuntimeError(f"{proc.name} exited: {proc.stderr_tail()}")
        return json.loads(line)

    @staticmethod
    def tell(proc: Proc, what: str) -> None:
        assert proc.popen.stdin is not None
        proc.popen.stdin.write(what + "\n")
        proc.popen.stdin.flush()

    def hold(
        self, name: str, proxy: Proc, port: int, count: int, nproc: int, storm: bool = False
    ) -> None:
        """Hold `count` connections through `proxy`, measure, optionally storm and check."""
        mem0, tcp0 = memory_kb(proxy.pid), slab_kb()
        log(f"{name}: before: {mem0}; opening {count:,} connections from {nproc} clients")
        t0 = time.monotonic()
        cl = self.clients(port, count, nproc, 10, WINDOW)
        res = [self.read(c) for c in cl]
        established = sum(r["established"] for r in res)
        errors: dict[str, int] = {}
        for r in res:
            for k, v in r["errors"].items():
                errors[k] = errors.get(k, 0) + v
        opened_s = time.monotonic() - t0
        time.sleep(2.0)
        mem1, tcp1, fds = memory_kb(proxy.pid), slab_kb(), max_fds(proxy.pid)
        if not proxy.alive():
            raise RuntimeError(f"{name} exited: {proxy.stderr_tail()}")
        row = {
            "target": name,
            "processes": mem1["processes"],
            "wanted": count,
            "established": established,
            "errors": errors,
            "open_seconds": round(opened_s, 1),
            "rss_before_kb": mem0["rss"],
            "rss_after_kb": mem1["rss"],
            "pss_before_kb": mem0["pss"],
            "pss_after_kb": mem1["pss"],
            "max_fds_per_process": fds,
            "kernel_slab_kb_per_conn": (tcp1 - tcp0) / max(established, 1),
        }
        n = established or 1
        row["rss_kb_per_conn"] = (mem1["rss"] - mem0["rss"]) / n
        row["pss_kb_per_conn"] = (mem1["pss"] - mem0["pss"]) / n
        log(
            f"{name}: {established:,} held in {opened_s:.1f}s, errors {errors}, after {mem1}, "
            f"most fds in one process {fds}, {row['pss_kb_per_conn']:.2f} KB PSS/conn"
        )
        self.rows.append(row)
        if storm and STORM:
            nc0 = listen_counters()
            log(f"{name}: accept storm: {STORM:,} connects at once")
            (sc,) = self.clients(port, STORM, 1, 9, STORM)
            self.storm = self.read(sc)
            self.storm["kernel"] = {k: v - nc0[k] for k, v in listen_counters().items()}
            log(f"{name}: storm: {self.storm}")
            self.tell(sc, "quit")
            sc.popen.wait(60)
            self.procs.stop(sc)
        if storm:
            for c in cl:
                self.tell(c, "check")
            got = [self.read(c) for c in cl]
            self.check = {
                "held": established,
                "echoed": sum(g["echoed"] for g in got),
                "failed": sum(g["failed"] for g in got),
                "errors": {
                    k: sum(g["errors"].get(k, 0) for g in got) for g in got for k in g["errors"]
                },
                "seconds": max(g["seconds"] for g in got),
            }
            log(f"{name}: echo check: {self.check}")
        for c in cl:
            self.tell(c, "quit")
        for c in cl:
            try:
                c.popen.wait(60)
            except subprocess.TimeoutExpired:
                pass
            self.procs.stop(c)

    def run(self) -> None:
        self.start_backends()
        per_worker = (FD_LIMIT - 300) // 2
        haproxy_count = None
        for target in TARGETS:
            try:
                if target == "l4lb":
                    workers = WORKERS or math.ceil(2 * (CONNS + STORM) / (0.8 * FD_LIMIT))
                    proc, port = self.start_l4lb(workers, per_worker)
                    nproc = max(CLIENTS, math.ceil(CONNS / (0.9 * FD_LIMIT)))
                    self.hold(f"l4lb, workers = {workers}", proc, port, CONNS, nproc, True)
                elif target == "haproxy":
                    proc, port, maxconn = self.start_haproxy()
                    haproxy_count = maxconn
                    nproc = math.ceil(maxconn / (0.9 * FD_LIMIT))
                    self.hold("haproxy, nbthread 1", proc, port, maxconn, nproc)
                elif target == "l4lb-1":
                    count = min(haproxy_count or per_worker, per_worker)
                    proc, port = self.start_l4lb(1, per_worker)
                    nproc = math.ceil(count / (0.9 * FD_LIMIT))
                    self.hold("l4lb, workers = 1", proc, port, count, nproc)
                else:
                    raise RuntimeError(f"unknown target {target}")
                self.procs.stop(proc, timeout=15)
            except RuntimeError as exc:
                self.notes.append(f"{target}: {exc}")
                log(f"{target}: {exc}")
                for p in list(self.procs.procs):
                    if not p.name.startswith("echo"):
                        self.procs.stop(p)


def versions() -> str:
    py = sys.version.split()[0]
    try:
        hap = subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout
        hap = hap.split("\n", 1)[0].split(" - ")[0]
    except OSError:
        hap = "haproxy missing"
    return f"- versions: Python {py}, {hap}, kernel {os.uname().release}"


def render(run: Run, started: str, settings: list[str]) -> str:
    out = [
        "# 100,000 connections (issue 14, item 5)",
        "",
        f"- date: {started} UTC",
        f"- commit: {commit(('l4lb', 'bench'))}",
        f"- machine: {machine()}",
        versions(),
        f"- connections: {CONNS:,} through l4lb, storm {STORM:,}, fd limit {FD_LIMIT:,} "
        f"per process, {BACKENDS} echo backends, window {WINDOW} per client",
        f"- kernel settings for the run: {', '.join(settings) or 'none changed'}",
        "",
        "| target | processes | held / wanted | errors | open s | RSS before -> after MB "
        "| PSS before -> after MB | KB RSS / conn | KB PSS / conn | most fds in a process "
        "| kernel slab KB / conn |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in run.rows:
        out.append(
            f"| {r['target']} | {r['processes']} | {r['established']:,} / {r['wanted']:,} "
            f"| {r['errors'] or 0} | {r['open_seconds']} "
            f"| {r['rss_before_kb'] / 1024:.0f} -> {r['rss_after_kb'] / 1024:.0f} "
            f"| {r['pss_before_kb'] / 1024:.0f} -> {r['pss_after_kb'] / 1024:.0f} "
            f"| {r['rss_kb_per_conn']:.2f} | {r['pss_kb_per_conn']:.2f} "
            f"| {r['max_fds_per_process']:,} | {r['kernel_slab_kb_per_conn']:.1f} |"
        )
    if run.storm:
        s = run.storm
        out += [
            "",
            f"Accept storm ({STORM:,} connects at once, on top of the held ones): "
            f"{s['established']:,} established, {s['failed']} failed {s['errors'] or ''}"
            f"in {s['seconds']} s; kernel listen counters during it: {s['kernel']}",
        ]
    if run.check:
        c = run.check
        out += [
            "",
            f"Echo check at the end: {c['echoed']:,} of {c['held']:,} held connections "
            f"echoed a byte, {c['failed']} failed {c['errors'] or ''}in {c['seconds']} s",
        ]
    if run.notes:
        out += ["", "Notes:", *(f"- {n}" for n in run.notes)]
    return "\n".join(out) + "\n"


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "echo":
        echo(int(sys.argv[2]))
        return 0
    if len(sys.argv) == 6 and sys.argv[1] == "client":
        client(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
        return 0
    if len(sys.argv) != 1:
        sys.exit(__doc__)
    if os.geteuid() != 0:
        sys.exit("conns100k: run as root (it sets kernel settings for the run)")
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    started = now_utc().strftime("%Y-%m-%d %H:%M")
    kernel = Kernel()
    tmp = Path(os.environ.get("BENCH_TMPDIR") or "/tmp") / f"conns100k-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    run = Run(tmp)
    settings = [f"{k.replace('/', '.')}={' '.join(v.split())}" for k, v in SYSCTLS.items()]
    settings.append(f"RLIMIT_NOFILE={FD_LIMIT}")
    try:
        kernel.apply(fds_needed=4 * (CONNS + STORM) + 10_000)
        run.run()
    except KeyboardInterrupt:
        run.notes.append("interrupted")
    finally:
        run.procs.stop_all()
        kernel.restore()
    report = render(run, started, settings)
    print(report)
    out = os.environ.get("BENCH_JSON")
    if out:
        Path(out).write_text(
            json.dumps(
                {"rows": run.rows, "storm": run.storm, "check": run.check, "notes": run.notes},
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
