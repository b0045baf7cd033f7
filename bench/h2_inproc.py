"""The Python cost of one HTTP/2 request through l4lb, without sockets or a load generator.

Like bench/http_inproc.py for HTTP/1.1: the HTTP/2 client adapter (`l7.h2.H2Server`, on
`l7.h2conn`) is fed the bytes of an h2 client connection (python-hyper `h2` as the client,
an implementation apart from the server's; the headers h2load sends, one request per
stream), and a pooled server connection (`l7.upstream.UpstreamConn`) an nginx-like response
to each request, through transports that only collect what is written. The client's bytes
are made before the clock starts (the client's own cost is not counted); after each round
they are checked: every stream got a 200 with its body.

    .venv/bin/python bench/h2_inproc.py [-n 20000] [--rounds 3] [--size 100] [--profile]

`--size` is the response body in bytes (the benchmark's 100 B and 64 KB: `--size 65536`).
The client advertises h2load's windows (2**30 - 1 per stream and for the connection, its
`-w 30 -W 30`) and its 16 KiB frames, and gives the connection's window back between
rounds (untimed).

Instruction counts, for a loaded machine: each round runs inside `sys.call_tracing`, so
callgrind's inclusive count of that one C function is the rounds' cost alone (not the
startup, nor the client that made and checks the bytes):

    valgrind --tool=callgrind --callgrind-out-file=/tmp/h2.cg \
        .venv/bin/python bench/h2_inproc.py -n 300 --rounds 1 [--size 65536]
    callgrind_annotate --inclusive=yes /tmp/h2.cg | grep -m1 sys_call_tracing  # / 300

`--profile` runs one more round under cProfile and says where an HTTP/2 request's time goes:
own time grouped by where the code lives (l7/, the jh2, hpack and hyperframe libraries,
l4lb/, the standard library; jh2's Rust HPACK counts as built-ins), then the top functions.
cProfile slows everything down, the shares are what counts. Pin it (`taskset -c 0`) while
something else runs.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import cProfile
import gc
import pstats
import statistics
import sys
import time
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.settings
import uvloop
from http_inproc import CollectingTransport, pooled_engine

from l7.h2 import H2Server
from l7.upstream import UpstreamConn

# What h2load sends for each request (its HPACK encoder indexes them after the first).
REQUEST = [
    (":method", "GET"),
    (":path", "/small"),
    (":scheme", "https"),
    (":authority", "127.0.0.1:8080"),
    ("accept", "*/*"),
    ("accept-encoding", "gzip, deflate"),
    ("user-agent", "h2load nghttp2/1.52.0"),
]


class KeepingTransport(CollectingTransport):
    """Keeps what is written (the server's frames, checked after each round)."""

    def __init__(self) -> None:
        super().__init__()
        self.out: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.out.append(data)


class Turn:
    """The loop as the connection sees it, but `call_soon` callbacks wait for `run()`, the
    end of a turn of the loop, which the benchmark calls when it chooses (timers go to the
    real loop)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.ready: list[tuple] = []

    def call_soon(self, callback, *args) -> None:
        self.ready.append((callback, args))

    def run(self) -> None:
        ready, self.ready = self.ready, []
        for callback, args in ready:
            callback(*args)

    def __getattr__(self, name: str):
        return getattr(self.loop, name)


def client_requests(client: h2.connection.H2Connection, count: int) -> list[bytes]:
    """The bytes of `count` requests, one HEADERS frame (END_STREAM) each."""
    out = []
    for _ in range(count):
        client.send_headers(client.get_next_available_stream_id(), REQUEST, end_stream=True)
        out.append(client.data_to_send())
    return out


def response(size: int) -> bytes:
    """What the benchmark's nginx backend answers for its file of `size` bytes."""
    return (
        b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Fri, 27 Nov 2026 10:00:00 GMT\r\n"
        b"Content-Type: application/octet-stream\r\nContent-Length: %d\r\n"
        b"Last-Modified: Fri, 27 Nov 2026 10:00:00 GMT\r\nConnection: keep-alive\r\n"
        b'ETag: "abc-64"\r\nAccept-Ranges: bytes\r\n\r\n' % size + b"x" * size
    )


def check(client: h2.connection.H2Connection, data: bytes, count: int, size: int) -> None:
    ok = body = 0
    for event in client.receive_data(data):
        if isinstance(event, h2.events.ResponseReceived):
            ok += dict(event.headers).get(b":status") == b"200"
        elif isinstance(event, h2.events.DataReceived):
            body += len(event.data)
    if ok != count or body != size * count:
        raise SystemExit(f"expected {count} responses of {size} bytes, got {ok} ({body} bytes)")
    if body:  # the connection's window back, as h2load gives it when half of it is used
        client.increment_flow_control_window(body)


PER_TURN = 10  # requests whose responses share a turn of the loop, as h2load's `-m 10`


async def measure(count: int, rounds: int, profile: bool, size: int) -> tuple[list[float], str]:
    loop = asyncio.get_running_loop()
    engine, server_conn = pooled_engine(loop)
    answer = response(size)

    # The client, with h2load's windows; it does not see the server's SETTINGS before its
    # requests are made (its streams are done one at a time, but it would count them as
    # open).
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.local_settings = h2.settings.Settings(
        client=True,
        initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**30 - 1},
    )
    client.initiate_connection()
    client.increment_flow_control_window(2**30 - 1 - 65535)
    preface = client.data_to_send()
    batches = [client_requests(client, count) for _ in range(rounds + profile)]

    server = H2Server(lambda: engine, ("127.0.0.1", 40000))
    turn = server.loop = Turn(loop)
    transport = KeepingTransport()
    server.connection_made(transport)
    server.data_received(preface)
    check(client, b"".join(transport.out), 0, size)
    transport.out.clear()
    gc.collect()
    gc.freeze()

    def one_round(batch: list[bytes]) -> float:
        # The responses of one turn of the loop leave at its end (`l7.streams.release`): here
        # the turn ends after each `PER_TURN` requests, as h2load's `-m 10` streams in flight.
        started = time.process_time()
        for i, data in enumerate(batch, 1):
            server.data_received(data)
            server_conn.data_received(answer)
            if i % PER_TURN == 0 or i == len(batch):
                turn.run()
        return (time.process_time() - started) / len(batch) * 1e6

    def checked() -> None:
        check(client, b"".join(transport.out), count, size)
        transport.out.clear()
        server.data_received(client.data_to_send())  # the WINDOW_UPDATE, untimed

    results = []
    for batch in batches[:rounds]:
        results.append(sys.call_tracing(one_round, (batch,)))
        checked()
    report = ""
    if profile:
        prof = cProfile.Profile()
        prof.enable()
        one_round(batches[-1])
        prof.disable()
        checked()
        report = where(pstats.Stats(prof), count)
    return results, report


def area(file: str) -> str:
    """Where a function lives, by its file."""
    parts = file.replace("\\", "/").split("/")
    for name in ("hpack", "hyperframe", "jh2", "h2", "l7", "l4lb", "asyncio"):
        if name in parts[:-1]:
            i = len(parts) - 1 - parts[::-1].index(name)
            rest = "/".join(parts[i:])
            return rest if name in ("l7", "l4lb") else f"{name} (library)"
    if file == "~":
        return "built-ins (C: bytes, dict, list, ...)"
    return f"standard library and other: {parts[-1]}"


def where(stats: pstats.Stats, count: int) -> str:
    total = sum(tt for (_, _, tt, _, _) in stats.stats.values()) or 1.0  # type: ignore[attr-defined]
    areas: collections.Counter[str] = collections.Counter()
    funcs = []
    for (file, line, name), (_, calls, tt, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        areas[area(file)] += tt
        funcs.append((tt, calls, f"{name} ({area(file)}:{line})" if file != "~" else name))
    lines = [
        f"cProfile, one round of {count} requests: own time per area (share, us per request "
        "under the profiler):",
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
    parser.add_argument("-n", type=int, default=20_000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=100, help="response body, bytes")
    parser.add_argument("--profile", action="store_true", help="then one round under cProfile")
    args = parser.parse_args()
    compiled = Path(sys.modules[UpstreamConn.__module__].__file__ or "").suffix == ".so"
    results, report = uvloop.run(measure(args.n, args.rounds, args.profile, args.size))
    build = "compiled" if compiled else "pure Python"
    rounds = ", ".join(f"{r:.2f}" for r in results)
    best, median = min(results), statistics.median(results)
    print(f"h2 request, {args.size} B, {build}: {median:.2f} us per request, median", end="")
    print(f" (best {best:.2f}; rounds: {rounds})")
    if report:
        print()
        print(report)


if __name__ == "__main__":
    main()
