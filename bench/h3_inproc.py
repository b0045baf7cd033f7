"""The Python cost of one HTTP/3 request through l4lb, without sockets or a load generator.

Like bench/h2_inproc.py for HTTP/2: l4lb's QUIC endpoint (`quic.endpoint.QuicEndpoint`, with
its `H3Server` per connection) is fed the datagrams of an aioquic client connection (the
headers h2load sends, one request per stream, one at a time) through a socket that only
collects what is sent, and a pooled server connection (`l7.upstream.UpstreamConn`) an
nginx-like response to each request. The handshake is done before the clock starts. Only
l4lb's side is timed: each request's datagrams into the endpoint and the response into the
server connection, which is QUIC (decrypting, ACKs, loss recovery, encrypting), HTTP/3
(frames, QPACK) and the pipeline; the client's own cost is not counted (it runs between the
timed parts). After each round every stream must have got a 200 with its 100 bytes.

    .venv/bin/python bench/h3_inproc.py [-n 5000] [--rounds 3] [--profile]

`--profile` runs one more round under cProfile (enabled for l4lb's side only) and says where
an HTTP/3 request's time goes: own time grouped by where the code lives (aioquic's QUIC,
its H3, its C crypto and pylsqpack, l7/, quic/, l4lb/, the standard library), then the top
functions. cProfile slows everything down: the shares are what counts. Pin it (`taskset -c
0`) while something else runs.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import cProfile
import gc
import pstats
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import uvloop
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from h2_inproc import Turn
from http_inproc import RESPONSE, CollectingTransport

from l4lb.accesslog import AccessLog
from l4lb.config.load import load
from l4lb.pool import build_pools
from l7.engine import HttpEngine, UpstreamRegistry
from l7.upstream import UpstreamConn
from quic.endpoint import QuicEndpoint
from quic.settings import quic_settings

VENV = Path(__file__).resolve().parent.parent / ".venv" / "bin"
CLIENT = ("127.0.0.1", 40000)
SERVER = ("127.0.0.1", 8443)
REQUEST = [
    (b":method", b"GET"),
    (b":path", b"/small"),
    (b":scheme", b"https"),
    (b":authority", b"127.0.0.1:8443"),
    (b"accept", b"*/*"),
    (b"accept-encoding", b"gzip, deflate"),
    (b"user-agent", b"h2load nghttp2/1.52.0"),
]


class Socket:
    """What the endpoint sends, kept for the client."""

    def __init__(self) -> None:
        self.out: list[bytes] = []

    def sendto(self, data: bytes, addr) -> int:
        self.out.append(data)
        return len(data)

    def fileno(self) -> int:
        return -1


class Listener:
    """The runtime's listener as far as the endpoint uses it: config, engine, counters."""

    def __init__(self, config, engine) -> None:
        self.config, self.engine, self.name = config, engine, config.name

    def __getattr__(self, name: str) -> int:
        if name.startswith("h3_"):
            return 0  # a counter, first incremented
        raise AttributeError(name)


def config_of(tmp: Path):
    cert, key = tmp / "c.crt", tmp / "c.key"
    subprocess.run(
        [
            str(VENV / "l4lb"),
            "cert",
            "selfsigned",
            "--cert",
            str(cert),
            "--key",
            str(key),
            "--name",
            "localhost",
        ],
        check=True,
        capture_output=True,
    )
    path = tmp / "inproc.toml"
    path.write_text(
        '[global]\naccess_log = false\n[listener.bench]\nbind = "127.0.0.1:8443"\n'
        'protocol = "https"\npool = "bench"\n'
        f'[[listener.bench.certs]]\ncert = "{cert}"\nkey = "{key}"\n'
        "[listener.bench.http]\nhttp3 = true\nmax_requests = 10000000\n"
        '[pool.bench]\n[[pool.bench.servers]]\naddress = "127.0.0.1:8081"\n'
    )
    return load(path)


class Client:
    """aioquic's client: requests out, responses counted."""

    def __init__(self) -> None:
        config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN)
        config.verify_mode = ssl.CERT_NONE
        config.server_name = "localhost"
        self.quic = QuicConnection(configuration=config)
        self.h3 = H3Connection(self.quic)
        self.ok = self.body = 0

    def receive(self, datagrams: list[bytes], now: float) -> None:
        for data in datagrams:
            self.quic.receive_datagram(data, SERVER, now)
        datagrams.clear()
        while (event := self.quic.next_event()) is not None:
            for h in self.h3.handle_event(event):
                if isinstance(h, HeadersReceived):
                    self.ok += dict(h.headers).get(b":status") == b"200"
                elif isinstance(h, DataReceived):
                    self.body += len(h.data)

    def request(self, now: float) -> list[bytes]:
        self.h3.send_headers(self.quic.get_next_available_stream_id(), REQUEST, end_stream=True)
        return [d for d, _ in self.quic.datagrams_to_send(now)]


async def measure(count: int, rounds: int, profile: bool) -> tuple[list[float], str]:
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory() as tmp:
        config = config_of(Path(tmp))
        settings = quic_settings(config.listeners[0])
    pools = build_pools(config.pools, {}, loop.time())
    access_log = AccessLog()
    access_log.enabled = False
    engine = HttpEngine(config.listeners[0], pools, UpstreamRegistry(loop), {}, access_log, None)
    pool = pools["bench"]
    upstream_pool = engine.link(pool, pool.servers[0]).upstream
    server_conn = UpstreamConn(upstream_pool)
    server_conn.connection_made(CollectingTransport())
    server_conn.reusable = True
    upstream_pool.put(server_conn)

    sock = Socket()
    endpoint = QuicEndpoint(loop, sock, Listener(config.listeners[0], engine), settings)
    client = Client()
    client.quic.connect(SERVER, now=loop.time())
    for _ in range(10):  # the handshake
        for data, _ in client.quic.datagrams_to_send(loop.time()):
            endpoint.datagram(data, CLIENT, loop.time())
        client.receive(sock.out, loop.time())
    if not endpoint.connections or not next(iter(endpoint.connections)).handshake_done:
        raise SystemExit("the QUIC handshake did not complete")
    # The responses of one turn of the loop leave at its end (`l7.streams.release`): here
    # the turn ends after each request's response is read, as one request at a time.
    turn = next(iter(endpoint.connections)).loop = Turn(loop)
    gc.collect()
    gc.freeze()

    def one_round(prof: cProfile.Profile | None) -> float:
        client.ok = client.body = 0
        spent = 0.0
        for _ in range(count):
            datagrams = client.request(loop.time())
            started = time.process_time()
            if prof is not None:
                prof.enable()
            now = loop.time()
            for data in datagrams:
                endpoint.datagram(data, CLIENT, now)
            server_conn.data_received(RESPONSE)
            turn.run()
            if prof is not None:
                prof.disable()
            spent += time.process_time() - started
            client.receive(sock.out, loop.time())
        for _ in range(3):  # the last ACKs, then check
            for data, _ in client.quic.datagrams_to_send(loop.time()):
                endpoint.datagram(data, CLIENT, loop.time())
            client.receive(sock.out, loop.time())
        if client.ok != count or client.body != 100 * count:
            raise SystemExit(
                f"expected {count} responses of 100 bytes, got {client.ok} ({client.body} bytes)"
            )
        return spent / count * 1e6

    results = [one_round(None) for _ in range(rounds)]
    report = ""
    if profile:
        prof = cProfile.Profile()
        one_round(prof)
        report = where(pstats.Stats(prof), count)
    return results, report


def area(file: str) -> str:
    """Where a function lives, by its file."""
    parts = file.replace("\\", "/").split("/")
    if "aioquic" in parts[:-1]:
        i = len(parts) - 1 - parts[::-1].index("aioquic")
        sub = parts[i + 1] if i + 1 < len(parts) - 1 else parts[-1]
        return f"aioquic/{sub} (library)"
    for name in ("l7", "quic", "l4lb", "asyncio", "cryptography"):
        if name in parts[:-1]:
            i = len(parts) - 1 - parts[::-1].index(name)
            rest = "/".join(parts[i:])
            return rest if name in ("l7", "quic", "l4lb") else f"{name} (library)"
    if file == "~":
        return "built-ins (C: aioquic's crypto and buffer, pylsqpack, bytes, dict, ...)"
    return f"standard library and other: {parts[-1]}"


def where(stats: pstats.Stats, count: int) -> str:
    total = sum(tt for (_, _, tt, _, _) in stats.stats.values()) or 1.0  # type: ignore[attr-defined]
    areas: collections.Counter[str] = collections.Counter()
    funcs = []
    for (file, line, name), (_, calls, tt, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        areas[area(file)] += tt
        funcs.append((tt, calls, f"{name} ({area(file)}:{line})" if file != "~" else name))
    lines = [
        f"cProfile, one round of {count} requests, l4lb's side only: own time per area "
        "(share, us per request under the profiler):",
        "",
        "| share | us/request | area |",
        "|---:|---:|---|",
    ]
    for name, tt in areas.most_common():
        lines.append(f"| {tt / total:.1%} | {tt / count * 1e6:.1f} | {name} |")
    lines += ["", "Top functions by own time:", "", "| share | calls/request | function |"]
    lines.append("|---:|---:|---|")
    for tt, calls, name in sorted(funcs, reverse=True)[:25]:
        lines.append(f"| {tt / total:.1%} | {calls / count:.1f} | {name} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=5_000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="then one round under cProfile")
    args = parser.parse_args()
    compiled = Path(sys.modules[UpstreamConn.__module__].__file__ or "").suffix == ".so"
    results, report = uvloop.run(measure(args.n, args.rounds, args.profile))
    build = "compiled" if compiled else "pure Python"
    rounds = ", ".join(f"{r:.2f}" for r in results)
    print(f"h3 request, {build}: {min(results):.2f} us per request (rounds: {rounds})")
    if report:
        print()
        print(report)


if __name__ == "__main__":
    main()
