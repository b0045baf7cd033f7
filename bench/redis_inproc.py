"""What a `scope = "global"` rate limit costs per request: one decision through Redis.

Starts its own redis-server on 127.0.0.1 (a free port, no persistence), then times, in one
process on one event loop, N decisions made the way the guard makes them
(`l7.redislimit.RedisLimiter.decide`: a task, EVALSHA of the GCRA script under the
timeout, the callback), one at a time (the latency one request waits) and `--concurrent`
at a time (the loop's cost per decision when requests overlap, as under load), beside the
local limiter's check (`l4lb.gcra.KeyedGcra`) for scale. Wall time per decision in µs, and
the process's CPU time per decision (what it takes from the proxy's core).

    .venv/bin/python bench/redis_inproc.py [-n 5000] [--concurrent 32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from l4lb.config.values import Address
from l4lb.gcra import KeyedGcra
from l7.redisconf import RedisConfig
from l7.redisgcra import script_args
from l7.redislimit import RedisLimiter


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu(before: os.times_result, n: int) -> str:
    """CPU of this process per decision since `before`: user (Python, redis-py, hiredis)
    and system (the kernel's loopback TCP, which runs in the sender's system calls)."""
    after = os.times()
    user, system = after.user - before.user, after.system - before.system
    return f"CPU per decision: {user / n * 1e6:.0f} µs user + {system / n * 1e6:.0f} µs system"


async def _sequential(limiter: RedisLimiter, n: int, args: tuple[int, int]) -> list[float]:
    loop = asyncio.get_running_loop()
    times = []
    for i in range(n):
        done = loop.create_future()
        start = time.perf_counter()
        assert limiter.decide(f"bench:{{{i % 1000}}}", args, done.set_result)
        outcome = await done
        times.append(time.perf_counter() - start)
        assert not isinstance(outcome, str), outcome
    return times


async def _concurrent(limiter: RedisLimiter, n: int, width: int, args: tuple[int, int]) -> float:
    loop = asyncio.get_running_loop()
    left = n
    finished = loop.create_future()

    def done(outcome: object) -> None:
        nonlocal left
        assert not isinstance(outcome, str), outcome
        left -= 1
        if left == 0:
            finished.set_result(None)
        elif left >= width:
            limiter.decide(f"bench:{{{left % 1000}}}", args, done)

    start = time.perf_counter()
    for i in range(min(width, n)):
        limiter.decide(f"bench:{{{i % 1000}}}", args, done)
    await finished
    return time.perf_counter() - start


async def main(n: int, width: int, port: int) -> None:
    config = RedisConfig(addresses=(Address("127.0.0.1", port),), timeout=1.0)
    limiter = RedisLimiter(config)
    args = script_args(1_000_000, 1.0, 1_000_000)  # always allowed: the cost, not the answer
    await _sequential(limiter, 200, args)  # connect, load the script, warm up
    cpu = os.times()
    times = sorted(await _sequential(limiter, n, args))
    p50, p99 = times[len(times) // 2], times[int(len(times) * 0.99)]
    print(
        f"one at a time: {sum(times) / n * 1e6:.0f} µs mean, {p50 * 1e6:.0f} p50, "
        f"{p99 * 1e6:.0f} p99 wall; {_cpu(cpu, n)}"
    )
    cpu = os.times()
    wall = await _concurrent(limiter, n, width, args)
    print(
        f"{width} at a time: {wall / n * 1e6:.0f} µs wall per decision "
        f"({n / wall:,.0f}/s); {_cpu(cpu, n)}"
    )
    local = KeyedGcra(1_000_000, 1.0, 1_000_000)
    start = time.perf_counter()
    for i in range(n):
        local.check(i % 1000, i * 1e-6)
    print(f"local limit (KeyedGcra.check): {(time.perf_counter() - start) / n * 1e6:.2f} µs")
    await limiter.client.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=5000)
    parser.add_argument("--concurrent", type=int, default=32)
    opts = parser.parse_args()
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed (./scripts/setup installs it)")
    port = _free_port()
    with tempfile.TemporaryDirectory() as folder:
        server = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", folder],
            stdout=subprocess.DEVNULL,
        )
        try:
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.05)
            try:
                import uvloop

                uvloop.run(main(opts.n, opts.concurrent, port))
            except ImportError:
                asyncio.run(main(opts.n, opts.concurrent, port))
        finally:
            server.kill()
            server.wait()
