"""aioquic serving HTTP/3 directly, for bench/run-h3's `direct` row: what aioquic's example
server (examples/http3_server.py in aiortc/aioquic) does, without its ASGI demo app (which
needs starlette and the examples, neither in the wheel): `aioquic.asyncio.serve` with an
`H3Connection` per connection, answering every GET with the file it names from `--root`
(read once at start), or 404. No proxying: the ceiling an aioquic-based server can reach.

    .venv/bin/python bench/h3_direct.py --port P --cert C --key K --root DIR
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from aioquic.asyncio import serve
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ProtocolNegotiated

FILES: dict[bytes, bytes] = {}


class Server(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.h3: H3Connection | None = None

    def quic_event_received(self, event) -> None:
        if isinstance(event, ProtocolNegotiated):
            self.h3 = H3Connection(self._quic)
        if self.h3 is None:
            return
        for h in self.h3.handle_event(event):
            if isinstance(h, HeadersReceived):
                path = dict(h.headers).get(b":path", b"/").split(b"?")[0]
                body = FILES.get(path)
                status = b"200" if body is not None else b"404"
                body = body if body is not None else b"not found\n"
                self.h3.send_headers(
                    h.stream_id,
                    [
                        (b":status", status),
                        (b"server", b"aioquic"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                )
                self.h3.send_data(h.stream_id, body, end_stream=True)
        self.transmit()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--root", required=True)
    args = parser.parse_args()
    for f in Path(args.root).iterdir():
        FILES[b"/" + f.name.encode()] = f.read_bytes()
    FILES[b"/"] = FILES.get(b"/index.html", b"")
    config = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
    config.load_cert_chain(args.cert, args.key)
    await serve("127.0.0.1", args.port, configuration=config, create_protocol=Server)
    await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main())
