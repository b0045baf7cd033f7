"""An HTTP/3 load client on aioquic, for bench/run-h3: Debian's h2load (nghttp2 1.52) is built
without QUIC, so this stands in for `h2load --alpn-list=h3`.

One process runs `--conns` QUIC connections (aioquic's asyncio client), each keeping
`--streams` requests in flight for `--seconds` (after a 0.5 s warm-up that is not counted),
and prints one JSON line: requests done, bytes of body, errors, CPU seconds of this process.
bench/http3.py starts several of these (the client is Python too, and may well be the
bottleneck: the report gives its CPU use). `--download` makes one request per connection and
times the whole body instead.

    .venv/bin/python bench/h3load.py URL [--conns 2] [--streams 10] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import time
from urllib.parse import urlsplit

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration


class Client(QuicConnectionProtocol):
    """One connection: `get` sends a request and resolves with (status, body bytes)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.waiting: dict[int, tuple[asyncio.Future, list]] = {}

    async def get(self, authority: str, path: str) -> tuple[int, int]:
        sid = self._quic.get_next_available_stream_id()
        self.h3.send_headers(
            sid,
            [
                (b":method", b"GET"),
                (b":scheme", b"https"),
                (b":authority", authority.encode()),
                (b":path", path.encode()),
                (b"user-agent", b"l4lb-h3load"),
            ],
            end_stream=True,
        )
        done = self._loop.create_future()
        self.waiting[sid] = (done, [0, 0])
        self.transmit()
        return await done

    def quic_event_received(self, event) -> None:
        for h in self.h3.handle_event(event):
            entry = self.waiting.get(h.stream_id)
            if entry is None:
                continue
            done, state = entry
            if isinstance(h, HeadersReceived) and not state[0]:
                state[0] = int(dict(h.headers).get(b":status", b"0"))
            elif isinstance(h, DataReceived):
                state[1] += len(h.data)
            if h.stream_ended:
                del self.waiting[h.stream_id]
                if not done.done():
                    done.set_result((state[0], state[1]))


async def run(url: str, conns: int, streams: int, seconds: float, download: bool) -> dict:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 443
    authority, path = parts.netloc, parts.path or "/"
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN)
    config.verify_mode = ssl.CERT_NONE
    config.server_name = "localhost"
    if download:  # browsers offer 6-15 MB windows; aioquic defaults to 1 MB
        config.max_data = config.max_stream_data = 16 << 20
    counts = {"requests": 0, "bytes": 0, "errors": 0, "seconds": 0.0}
    loop = asyncio.get_running_loop()
    start = loop.time() + (0 if download else 0.5)
    stop = start + seconds

    async def worker(client: Client) -> None:
        while loop.time() < stop:
            try:
                status, size = await asyncio.wait_for(client.get(authority, path), 30)
            except (TimeoutError, ConnectionError):
                counts["errors"] += 1
                return
            if loop.time() >= start:
                counts["requests"] += status == 200
                counts["errors"] += status != 200
                counts["bytes"] += size
            if download:
                return

    async def connection() -> None:
        async with connect(host, port, configuration=config, create_protocol=Client) as c:
            await asyncio.gather(*(worker(c) for _ in range(1 if download else streams)))

    began = time.monotonic()
    await asyncio.gather(*(connection() for _ in range(conns)))
    counts["seconds"] = time.monotonic() - began if download else seconds
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--conns", type=int, default=2)
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--download", action="store_true")
    args = parser.parse_args()
    cpu = time.process_time()
    out = asyncio.run(run(args.url, args.conns, args.streams, args.seconds, args.download))
    out["cpu"] = time.process_time() - cpu
    print(json.dumps(out))


if __name__ == "__main__":
    main()
