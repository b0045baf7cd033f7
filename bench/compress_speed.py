"""Compression speed (issue 12, "Benchmark"): MB of text compressed per CPU-second by l4lb's
encoder (l7/compress.py `Encoder`, in-process) for gzip 1 and 6, brotli 4 and zstd 3, beside
nginx `gzip` at the same levels; and the CPU of a cache hit answered from a stored
compressed variant against an uncompressed hit.

1. l4lb: the encoder is fed the same text body (the project's docs, `--size` bytes) in
   `--chunk` pieces, each flushed as the pipeline does, `-n` bodies per round; CPU seconds
   of this process (time.process_time), best round.
2. nginx: a 1-worker nginx on CPU 0 serves that text as a static file with `gzip on;
   gzip_comp_level L`; `h2load --h1 -c1 -n N` (`--nginx-n`) on CPU 1 asks for it with
   `Accept-Encoding: gzip`; MB/s per CPU-second is N x size over the CPU seconds of the
   nginx worker (/proc), once including its HTTP work ("gross") and once less the CPU of the
   same N requests with `gzip off` ("net", compression alone). `--no-nginx` skips it.
3. In-process, one engine with `compress = true` and a `[cache.NAME]` route, the text stored:
   µs of CPU per hit for `Accept-Encoding: gzip` / `br` / `zstd` (answered from the stored
   variant: compressed once, then kept) and for no Accept-Encoding (identity). Target
   (issue 12): the cached-variant hit costs no more than the uncompressed hit.

    .venv/bin/python bench/compress_speed.py [-n 50] [--size 131072] [--chunk 65536]
        [--rounds 3] [--hits 20000] [--nginx-n 500] [--no-nginx]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import shutil
import subprocess
import tempfile
import time
from email.utils import formatdate
from pathlib import Path

import uvloop
from common import (
    LOAD_CPU,
    PROXY_CPU,
    ROOT,
    Procs,
    cpu_seconds,
    free_port,
    nginx_config,
    nginx_temp_paths,
    prepare_process,
    start_nginx,
    tree,
    wait_accepting,
)
from inproc import Client, engine_from_toml

from l7.compress import Encoder, available

CASES = (("gzip", 1), ("gzip", 6), ("br", 4), ("zstd", 3))


def corpus(size: int) -> bytes:
    """`size` bytes of the project's own docs (Markdown: prose, tables, code), repeated."""
    parts = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    text = b"\n".join(p.read_bytes() for p in parts if p.exists())
    return (text * (size // len(text) + 1))[:size]


def encoder_speed(body: bytes, encoding: str, level: int, chunk: int, n: int, rounds: int):
    """(MB/s per CPU-second, compressed size) of the streaming encoder over `n` bodies."""
    pieces = [body[i : i + chunk] for i in range(0, len(body), chunk)]
    best, out = float("inf"), 0
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(n):
            enc = Encoder(encoding, level)
            out = sum(len(enc.compress(p)) for p in pieces) + len(enc.finish())
        best = min(best, time.process_time() - start)
    return n * len(body) / best / 1e6, out


def nginx_cpu(tmp: Path, level: int | None, n: int) -> float:
    """CPU seconds of a 1-worker nginx's worker for `n` gzip requests of /page.txt
    (`level` None: gzip off)."""
    procs = Procs(tmp, leader_only=True)
    port = free_port()
    gzip = f"gzip on;\n    gzip_comp_level {level};" if level else "gzip off;"
    name = f"nginx-gzip{level or 0}"
    cfg = tmp / f"{name}.conf"
    body = f"""http {{
    access_log off;
{nginx_temp_paths(tmp, name)}
    keepalive_requests 1000000;
    default_type text/plain;
    {gzip}
    gzip_types text/plain;
    gzip_min_length 0;
    server {{
        listen 127.0.0.1:{port};
        root {tmp / "www"};
    }}
}}
"""
    cfg.write_text(nginx_config(tmp, name, 1024, body))
    try:
        master = start_nginx(procs, name, cfg, PROXY_CPU)
        wait_accepting(master, port)
        url = f"http://127.0.0.1:{port}/page.txt"

        def h2load(count: int) -> list[str]:
            argv = ["taskset", "-c", str(LOAD_CPU), "h2load", "--h1", "-c1", f"-n{count}"]
            return [*argv, "-H", "accept-encoding: gzip", url]

        subprocess.run(h2load(5), capture_output=True, check=False)  # warm the worker
        argv = h2load(n)
        workers = [p for p in tree(master.pid) if p != master.pid]
        before = sum(cpu_seconds(p) for p in workers)
        run = subprocess.run(argv, capture_output=True, text=True, check=False)
        after = sum(cpu_seconds(p) for p in workers)
        if f"{n} succeeded" not in run.stdout:
            raise SystemExit(f"h2load against {name}: {run.stdout[-400:]}{run.stderr[-400:]}")
        return after - before
    finally:
        procs.stop_all()


async def hit_costs(body: bytes, hits: int, rounds: int) -> dict[str, float]:
    """CPU µs per cache hit, by the request's Accept-Encoding."""
    text = """[listener.bench]
bind = "127.0.0.1:8080"
protocol = "http"
pool = "bench"
compress = true
[listener.bench.http]
max_requests = 10000000
[[listener.bench.routes]]
pool = "bench"
cache = "c"
[cache.c]
max_bytes = "64m"
[pool.bench]
[[pool.bench.servers]]
address = "127.0.0.1:8081"
"""
    engine, conns = engine_from_toml(text, asyncio.get_running_loop())
    upstream = conns["bench"]
    response = (
        b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: %s\r\n"
        b"Content-Type: text/html; charset=utf-8\r\nContent-Length: %d\r\n"
        b"Last-Modified: Fri, 27 Nov 2026 10:00:00 GMT\r\nConnection: keep-alive\r\n"
        b'ETag: "abc-64"\r\nCache-Control: public, max-age=86400\r\n\r\n'
        % (formatdate(usegmt=True).encode(), len(body))
    ) + body
    head = b"GET /page HTTP/1.1\r\nHost: example.com\r\nUser-Agent: bench\r\n"
    kinds = {"identity": b"", "gzip": b"gzip", "br": b"br", "zstd": b"zstd"}
    kinds = {k: v for k, v in kinds.items() if k == "identity" or available(k)}
    requests = {
        k: head + (b"Accept-Encoding: " + v + b"\r\n" if v else b"") + b"\r\n"
        for k, v in kinds.items()
    }
    client = Client(engine)
    client.server.data_received(requests["identity"])  # the miss: forwarded, then stored
    upstream.data_received(response)
    for _ in range(3):  # the first hit of each encoding makes and stores its variant
        for request in requests.values():
            client.server.data_received(request)
            await asyncio.sleep(0)
    forwarded = upstream.transport.writes
    gc.collect()
    gc.freeze()
    best = dict.fromkeys(requests, float("inf"))
    for _ in range(rounds):
        for kind, request in requests.items():
            written = client.transport.writes
            start = time.process_time()
            for _ in range(hits):
                client.server.data_received(request)
            best[kind] = min(best[kind], (time.process_time() - start) / hits * 1e6)
            if client.transport.writes - written < hits:
                raise SystemExit(f"{kind}: not every hit was answered")
    if upstream.transport.writes != forwarded:
        raise SystemExit("a hit went to the server: the response was not stored")
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=50, help="bodies per round")
    parser.add_argument("--size", type=int, default=131072, help="body bytes")
    parser.add_argument("--chunk", type=int, default=65536, help="bytes per encoder call")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hits", type=int, default=20000, help="cache hits per round")
    parser.add_argument("--nginx-n", type=int, default=500, help="requests to each nginx")
    parser.add_argument("--no-nginx", action="store_true")
    args = parser.parse_args()
    prepare_process()  # this process on the load CPU, nginx on the proxy CPU
    body = corpus(args.size)
    print(f"# Compression speed: {len(body):,} bytes of Markdown, {args.chunk:,}-byte chunks\n")
    nginx: dict[int, float] = {}
    if not args.no_nginx and shutil.which("nginx") and shutil.which("h2load"):
        tmp = Path(tempfile.mkdtemp(prefix="compress-speed-"))
        try:
            (tmp / "www").mkdir()
            (tmp / "www" / "page.txt").write_bytes(body)
            plain = nginx_cpu(tmp, None, args.nginx_n)
            for level in sorted({lvl for enc, lvl in CASES if enc == "gzip"}):
                nginx[level] = nginx_cpu(tmp, level, args.nginx_n)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    mb = args.nginx_n * len(body) / 1e6
    print("| encoding | ratio | l4lb MB/s per CPU-s | nginx gross | nginx net | l4lb / nginx net |")
    print("|---|---:|---:|---:|---:|---:|")
    for encoding, level in CASES:
        if not available(encoding):
            print(f"| {encoding} {level} | (not installed) | | | | |")
            continue
        speed, out = encoder_speed(body, encoding, level, args.chunk, args.n, args.rounds)
        cells = ["-", "-", "-"]
        if encoding == "gzip" and level in nginx:
            gross = mb / nginx[level] if nginx[level] > 0 else None
            net_cpu = nginx[level] - plain
            net = mb / net_cpu if net_cpu > 0 else None
            cells = [
                f"{gross:.1f}" if gross else "-",
                f"{net:.1f}" if net else "-",
                f"{speed / net:.2f}" if net else "-",
            ]
        print(f"| {encoding} {level} | {len(body) / out:.2f} | {speed:.1f} | {' | '.join(cells)} |")
    if nginx:
        print(
            f"\nnginx: {args.nginx_n} requests by h2load, worker CPU measured in clock ticks; "
            f"gzip off took {plain:.2f} s (subtracted for 'net')."
        )
    hits = uvloop.run(hit_costs(body[:16384], args.hits, args.rounds))
    print("\n# Cache hits of a 16 KB text/html response: CPU µs per hit\n")
    print("| Accept-Encoding | µs per hit | / identity hit |")
    print("|---|---:|---:|")
    for kind, cost in hits.items():
        print(f"| {kind} | {cost:.1f} | {cost / hits['identity']:.2f} |")
    worst = max(v for k, v in hits.items() if k != "identity")
    verdict = "met" if worst <= hits["identity"] * 1.05 else "missed"
    print(
        f"\nTarget (issue 12): a cached compressed variant costs no more than an uncompressed "
        f"hit (within 5%): {verdict}"
    )


if __name__ == "__main__":
    main()
