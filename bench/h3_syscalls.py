"""System calls and datagrams of l4lb's HTTP/3 side: per small request and per 10 MB download.

    .venv/bin/python bench/h3_syscalls.py [-n 200] [--download 10485760] [--no-strace]

l4lb (`https` with `http3 = true`, one process) is started in front of an nginx backend
(not traced). An aioquic client in this process, driven by hand over a UDP socket (sans-IO,
no asyncio), makes `-n` small requests one after the other on one connection, then one
download of `--download` bytes; `strace -f -c` is attached to l4lb around each part. Printed
per small request: the datagrams l4lb sent (counted by the client as they arrive, with how
many were small enough to be ACK-only) and l4lb's UDP system calls; per download: the calls,
the datagrams and l4lb's CPU seconds (noisy). Counts do not move with the machine's load
(unlike timings); strace slows l4lb, which may let more datagrams pile up per wake-up than
without it. `L4LB_QUIC_GSO=0` in the environment turns UDP GSO off in l4lb, to compare.
"""

from __future__ import annotations

import argparse
import os
import re
import select
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import common
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from common import VENV, Procs, free_port
from http3 import udp_bound

ACK_ONLY = 60  # bytes: a short-header packet with an ACK frame and no stream data


class Client:
    """One aioquic client connection over a blocking UDP socket, stepped by hand."""

    def __init__(self, port: int) -> None:
        config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN)
        config.verify_mode = ssl.CERT_NONE
        config.server_name = "localhost"
        config.max_data = config.max_stream_data = 16 << 20
        self.addr = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.connect(self.addr)
        self.quic = QuicConnection(configuration=config)
        self.h3 = H3Connection(self.quic)
        self.done: dict[int, int] = {}  # stream -> body bytes, once ended
        self.body: dict[int, int] = {}
        self.datagrams = self.small = 0
        self.quic.connect(self.addr, now=time.monotonic())
        self.flush()

    def flush(self) -> None:
        for data, _ in self.quic.datagrams_to_send(now=time.monotonic()):
            self.sock.send(data)

    def step(self) -> None:
        timer = self.quic.get_timer()
        wait = 1.0 if timer is None else max(0.0, min(1.0, timer - time.monotonic()))
        if select.select([self.sock], [], [], wait)[0]:
            while True:
                try:
                    data = self.sock.recv(65536, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
                self.datagrams += 1
                self.small += len(data) <= ACK_ONLY
                self.quic.receive_datagram(data, self.addr, time.monotonic())
        elif timer is not None:
            self.quic.handle_timer(now=time.monotonic())
        while (event := self.quic.next_event()) is not None:
            for h in self.h3.handle_event(event):
                if isinstance(h, DataReceived):
                    self.body[h.stream_id] = self.body.get(h.stream_id, 0) + len(h.data)
                if isinstance(h, (DataReceived, HeadersReceived)) and h.stream_ended:
                    self.done[h.stream_id] = self.body.get(h.stream_id, 0)
        self.flush()

    def get(self, path: str) -> int:
        sid = self.quic.get_next_available_stream_id()
        head = [(b":method", b"GET"), (b":scheme", b"https"), (b":path", path.encode()),
                (b":authority", f"127.0.0.1:{self.addr[1]}".encode())]  # fmt: skip
        self.h3.send_headers(sid, head, end_stream=True)
        self.flush()
        deadline = time.monotonic() + 120
        while sid not in self.done:
            if time.monotonic() > deadline:
                raise SystemExit(f"no answer to {path}")
            self.step()
        return self.done[sid]

    def settle(self, seconds: float = 0.2) -> None:
        """Let the last ACKs and timers play out (so they count in the part just done)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.step()


def traced(pid: int, out: Path) -> subprocess.Popen:
    """strace on every thread of l4lb and of its children (the worker, if any)."""
    tids = [t for p in common.tree(pid) for t in os.listdir(f"/proc/{p}/task")]
    argv = ["strace", "-f", "-c", "-o", str(out)] + [a for t in tids for a in ("-p", t)]
    strace = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # attached
    return strace


def calls(strace: subprocess.Popen, out: Path) -> dict[str, int]:
    strace.send_signal(signal.SIGINT)
    strace.wait(10)
    counts = {}
    for line in out.read_text().splitlines():
        m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$", line)
        if m:
            counts[m.group(2)] = int(m.group(1))
    return counts


def show(title: str, counts: dict[str, int], per: int) -> None:
    udp = ("sendto", "sendmsg", "recvfrom", "recvmsg", "epoll_wait", "epoll_pwait")
    parts = [f"{name} {counts.get(name, 0) / per:.2f}" for name in udp if name in counts]
    total = sum(counts.values()) / per
    print(f"{title}: {total:.2f} system calls ({', '.join(parts)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=200, help="small requests")
    parser.add_argument("--download", type=int, default=10 << 20, help="bytes")
    parser.add_argument("--no-strace", action="store_true", help="datagrams only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        procs = Procs(tmp)
        try:
            files = {"small": b"s" * 100, "big": b"b" * args.download}
            _, backend = common.start_http_backend(procs, tmp, None, files)
            cert, key = tmp / "c.crt", tmp / "c.key"
            subprocess.run([str(VENV / "l4lb"), "cert", "selfsigned", "--cert", str(cert),
                            "--key", str(key), "--name", "localhost"], check=True)  # fmt: skip
            port = free_port()
            extra = (f'\n[[listener.bench.certs]]\ncert = "{cert}"\nkey = "{key}"\n'
                     "\n[listener.bench.http]\nhttp3 = true\n")  # fmt: skip
            cfg = tmp / "l4lb.toml"
            cfg.write_text(common.l4lb_config(port, backend, "https", None, extra))
            proxy = procs.start("l4lb", [str(VENV / "l4lb"), "up", str(cfg)])
            deadline = time.monotonic() + 15
            while not udp_bound(port):
                if time.monotonic() > deadline or not proxy.alive():
                    raise SystemExit(f"l4lb did not start: {proxy.stderr_tail()}")
                time.sleep(0.05)
            client = Client(port)
            if client.get("/small") != 100:
                raise SystemExit("the first request failed")
            client.settle()
            strace = None if args.no_strace else traced(proxy.pid, tmp / "small.strace")
            before, small_before = client.datagrams, client.small
            cpu = common.cpu_seconds(proxy.pid)
            for _ in range(args.n):
                if client.get("/small") != 100:
                    raise SystemExit("a small request failed")
            client.settle()
            cpu = common.cpu_seconds(proxy.pid) - cpu
            got = client.datagrams - before
            acks = client.small - small_before
            print(f"small requests: {args.n}, {got / args.n:.2f} datagrams from l4lb per "
                  f"request, {acks / args.n:.2f} of them ACK-only size, l4lb CPU "
                  f"{cpu / args.n * 1e6:.0f} us per request")  # fmt: skip
            if strace is not None:
                show("  per request", calls(strace, tmp / "small.strace"), args.n)
            strace = None if args.no_strace else traced(proxy.pid, tmp / "big.strace")
            before = client.datagrams
            cpu = common.cpu_seconds(proxy.pid)
            started = time.monotonic()
            if client.get("/big") != args.download:
                raise SystemExit("the download is short")
            seconds = time.monotonic() - started
            client.settle()
            cpu = common.cpu_seconds(proxy.pid) - cpu
            print(f"download: {args.download} B in {seconds:.2f} s, "
                  f"{client.datagrams - before} datagrams, l4lb CPU {cpu:.2f} s")  # fmt: skip
            if strace is not None:
                show("  per download", calls(strace, tmp / "big.strace"), 1)
        finally:
            procs.stop_all()


if __name__ == "__main__":
    main()
