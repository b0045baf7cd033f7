"""The Python cost of one HTTP request through l4lb, without sockets or a load generator.

The client adapter (`l7.h1.H1Server`) and a pooled server connection (`l7.upstream.UpstreamConn`)
are fed a request and an nginx-like response through transports that only collect what is
written, N times, and the CPU time per request is printed. This isolates the pipeline's
Python from the kernel's share and from the harness (bench/RESULTS.md, HTTP: "Where l4lb's
time goes"), so a change to l7/ can be judged in seconds; `bench/run-http` remains the
measure that counts.

    .venv/bin/python bench/http_inproc.py [--shape one|browser] [-n 50000] [--rounds 3]
    .venv/bin/python bench/http_inproc.py --calls [-n 2000]   # Python calls per request
    .venv/bin/python bench/http_inproc.py --shape cache-hit      # the cache's hit path

`--shape cache-hit` runs bench/cachebench.py's l4lb config (a route with a cache) and asks for
its one hot 2 KB object, stored by a first request: every measured request is a hit and the
server connection is never written to. `--shape cache-proxied` asks for the same object through
that config's route without a cache, with the same response, for the proxied path beside it.

`--calls` counts the Python function calls per request under cProfile (a figure that does
not move with the machine's load, so a reshaping of the hot path can be checked on a busy
machine; in the compiled build only the calls left to the interpreter are counted).

Run it from a compiled copy (`cd build/compiled && .venv/bin/python bench/http_inproc.py`)
to measure the compiled build. Pin it (`taskset -c 0`) while something else runs.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import sys
import tempfile
import time
from pathlib import Path

import uvloop
from cachebench import l4lb_cache_config  # bench/ is on sys.path when this file is run
from http1 import l4lb_config

from l4lb.accesslog import AccessLog
from l4lb.config.load import load
from l4lb.pool import build_pools
from l7.engine import HttpEngine, UpstreamRegistry
from l7.h1 import H1Server
from l7.upstream import UpstreamConn

REQUESTS = {
    # what wrk sends
    "one": b"GET /small HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
    # a browser's navigation request, nine fields
    "browser": (
        b"GET /small HTTP/1.1\r\nHost: example.com\r\n"
        b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0\r\n"
        b"Accept: text/html,application/xhtml+xml\r\nAccept-Language: en-US,en;q=0.5\r\n"
        b"Accept-Encoding: gzip, deflate, br\r\nConnection: keep-alive\r\n"
        b"Cookie: a=b; c=d\r\nUpgrade-Insecure-Requests: 1\r\n\r\n"
    ),
    # bench/cachebench.py's hot object, from its cached route and from its proxied one
    "cache-hit": b"GET /static/hot.css HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
    "cache-proxied": b"GET /nocache/static/hot.css HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
}
# What the benchmark's nginx backend answers for its 100-byte file.
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Fri, 27 Nov 2026 10:00:00 GMT\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Length: 100\r\n"
    b"Last-Modified: Fri, 27 Nov 2026 10:00:00 GMT\r\nConnection: keep-alive\r\n"
    b'ETag: "abc-64"\r\nAccept-Ranges: bytes\r\n\r\n' + b"x" * 100
)
# What cachebench's backend answers for its hot object (2 KB of CSS, cached for a year).
CACHE_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Fri, 27 Nov 2026 10:00:00 GMT\r\n"
    b"Content-Type: text/css\r\nContent-Length: 2048\r\n"
    b"Last-Modified: Fri, 27 Nov 2026 10:00:00 GMT\r\nConnection: keep-alive\r\n"
    b'ETag: "abc-800"\r\nCache-Control: public, max-age=31536000, immutable\r\n'
    b"Accept-Ranges: bytes\r\n\r\n" + b"x" * 2048
)


class CollectingTransport(asyncio.Transport):
    """Keeps the count of writes; never blocks, never closes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True


def pooled_engine(
    loop: asyncio.AbstractEventLoop, cache: bool = False
) -> tuple[HttpEngine, UpstreamConn]:
    """The HTTP benchmark's l4lb config (`cache`: the cache benchmark's) as an engine, with one
    pooled server connection on a collecting transport (feed it responses with
    `data_received`)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "inproc.toml"
        # the benchmark's own l4lb config
        path.write_text(l4lb_cache_config(8080, 8081) if cache else l4lb_config(8080, 8081))
        config = load(path)
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
    return engine, server_conn


def setup(shape: str) -> tuple[H1Server, UpstreamConn, CollectingTransport, bytes | None]:
    """The client connection, the server connection, the client's transport and what the
    server answers each request with (None: nothing, every request is a cache hit)."""
    loop = asyncio.get_running_loop()
    cache = shape.startswith("cache-")
    engine, server_conn = pooled_engine(loop, cache)
    client = H1Server(lambda: engine, ("127.0.0.1", 40000))
    client_transport = CollectingTransport()
    client.connection_made(client_transport)
    response: bytes | None = CACHE_RESPONSE if cache else RESPONSE
    if shape == "cache-hit":
        client.data_received(REQUESTS[shape])  # the miss that stores the object
        server_conn.data_received(response)
        store = engine.caches["c"][0]
        if store.hits or store.stores != 1:
            raise SystemExit("cache-hit: the first request did not store the object")
        response = None
    return client, server_conn, client_transport, response


async def measure(shape: str, count: int, rounds: int) -> list[float]:
    request = REQUESTS[shape]
    client, server_conn, client_transport, response = setup(shape)
    gc.collect()
    gc.freeze()
    results = []
    for _ in range(rounds):
        before = client_transport.writes
        started = time.process_time()
        if response is None:
            for _ in range(count):
                client.data_received(request)
        else:
            for _ in range(count):
                client.data_received(request)
                server_conn.data_received(response)
        results.append((time.process_time() - started) / count * 1e6)
        if client_transport.writes - before < count:  # a response written per request
            raise SystemExit(f"expected {count} responses, got {client_transport.writes - before}")
    return results


async def count_calls(shape: str, count: int) -> float:
    """Python function calls per request, after a warm-up of as many requests."""
    request = REQUESTS[shape]
    client, server_conn, _, response = setup(shape)
    for _ in range(count):  # warm-up: pools, caches, first-use imports
        client.data_received(request)
        if response is not None:
            server_conn.data_received(response)
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(count):
        client.data_received(request)
        if response is not None:
            server_conn.data_received(response)
    profile.disable()
    return pstats.Stats(profile).total_calls / count  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(REQUESTS), default="one")
    parser.add_argument("-n", type=int, default=50_000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", action="store_true", help="count calls per request")
    args = parser.parse_args()
    if args.calls:
        calls = uvloop.run(count_calls(args.shape, min(args.n, 2000)))
        print(f"{args.shape} request: {calls:.1f} Python function calls per request")
        return
    compiled = Path(sys.modules[H1Server.__module__].__file__ or "").suffix == ".so"
    results = uvloop.run(measure(args.shape, args.n, args.rounds))
    build = "compiled" if compiled else "pure Python"
    rounds = ", ".join(f"{r:.2f}" for r in results)
    print(f"{args.shape} request, {build}: {min(results):.2f} us per request (rounds: {rounds})")


if __name__ == "__main__":
    main()
