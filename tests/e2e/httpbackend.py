"""A real HTTP/1.1 server for the L7 tests (h11 over threads), and a WebSocket echo server.

Paths: `/headers` (the request as JSON), `/status/N`, `/bytes/N` (Content-Length body),
`/chunked/N` (chunked body), `/digest` (reads the whole request body, answers its length and
sha256), `/slow/SECONDS`, `/close` (answers, then resets the connection before the next
response), `/resp?n=N&type=T&h=NAME:VALUE&chunked=1&encode=E` (N bytes of text, Content-Type T, sent
encoded with E (gzip, br, zstd) when asked,
each `h` as a response field; with an `etag` field, a matching If-None-Match gets 304, and
with a `last-modified` one, an equal If-Modified-Since), `/trailers` (a chunked body ending
in trailer fields, allowed ones and forbidden ones, with the request's trailers as JSON in
the body), `/early-hints` (a 103 with a Link, then 200), anything else: a small body naming
the server. Counts accepted connections. For the cache tests, `/resp` answers `fail` (a
status) when it is set, closes the connection without answering when `drop` is set, never
answers 304 when `no304` is set, waits for `gate` (an Event) when there is one before its
head and for `mid` after the first 1000 bytes of its body, and says in
`x-seq` how many requests the server had seen.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import threading
import time

import h11

__all__ = ["HttpBackend", "RawBackend", "WsBackend"]


class HttpBackend:
    def __init__(self, name: str, port: int = 0) -> None:
        self.name = name
        self.sock = socket.create_server(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.requests = 0
        self.seen: list[dict] = []
        self.fail = 0
        self.drop = False
        self.no304 = False
        self.gate: threading.Event | None = None
        self.mid: threading.Event | None = None
        self.lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self.sock.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle stalls
            with self.lock:
                self.accepted += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, sock: socket.socket) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=1 << 20)
        try:
            while True:
                event = self._next(conn, sock)
                if event is None or isinstance(event, h11.ConnectionClosed):
                    return
                if isinstance(event, h11.Request):
                    self._answer(conn, sock, event)
                    if conn.our_state is h11.MUST_CLOSE:
                        return
                    conn.start_next_cycle()
        except (OSError, h11.ProtocolError):
            pass
        finally:
            sock.close()

    def _next(self, conn: h11.Connection, sock: socket.socket):
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = sock.recv(262144)
                conn.receive_data(data)
                continue
            return event

    def _body(self, conn: h11.Connection, sock: socket.socket) -> tuple[int, str, list]:
        """The request body's length, sha256 and trailer fields."""
        h = hashlib.sha256()
        n = 0
        while True:
            event = self._next(conn, sock)
            if isinstance(event, h11.Data):
                h.update(event.data)
                n += len(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return n, h.hexdigest(), [(k.decode(), v.decode()) for k, v in event.headers]
            elif isinstance(event, h11.ConnectionClosed) or event is None:
                return n, h.hexdigest(), []

    def _answer(self, conn: h11.Connection, sock: socket.socket, req: h11.Request) -> None:
        target = req.target.decode()
        headers = [(k.decode(), v.decode()) for k, v in req.headers]
        with self.lock:
            self.requests += 1
            self.seen.append({"method": req.method.decode(), "target": target, "headers": headers})
        length, digest, trailers = self._body(conn, sock)
        with self.lock:
            self.seen[-1]["trailers"] = trailers
        parts = target.split("?")[0].strip("/").split("/")
        status, body, chunked = 200, f"{self.name}\n".encode(), False
        if parts[0] == "headers":
            body = json.dumps({"target": target, "headers": headers, "server": self.name}).encode()
        elif parts[0] == "status":
            status = int(parts[1])
        elif parts[0] == "bytes":
            body = b"b" * int(parts[1])
        elif parts[0] == "chunked":
            body, chunked = b"c" * int(parts[1]), True
        elif parts[0] == "digest":
            body = f"{length} {digest}".encode()
        elif parts[0] == "flaky" and self.name.startswith("bad"):
            status = int(parts[1]) if len(parts) > 1 else 503
        elif parts[0] == "slow":
            time.sleep(float(parts[1]))
        elif parts[0] == "trailers":
            body, chunked = json.dumps({"trailers": trailers}).encode(), True
        elif parts[0] == "early-hints":
            hint = h11.InformationalResponse(
                status_code=103, headers=[("link", "</style.css>; rel=preload")]
            )
            sock.sendall(conn.send(hint))
        out = [("x-server", self.name)]
        if parts[0] == "resp" and self.drop:
            sock.close()
            return
        if parts[0] == "resp" and self.gate is not None:
            self.gate.wait(30)
        if parts[0] == "resp" and self.fail:
            status, body, extra = self.fail, b"failed\n", []
            out += extra
        elif parts[0] == "resp":
            conditional = {"if-none-match", "if-modified-since"}
            asked = [h for h in headers if not (self.no304 and h[0].lower() in conditional)]
            status, body, chunked, extra = _resp(target, asked)
            out.append(("x-seq", str(self.requests)))
            out += extra
        if not chunked:
            out.append(("content-length", str(len(body))))
        if parts[0] == "close":
            out.append(("connection", "close"))
        sock.sendall(conn.send(h11.Response(status_code=status, headers=out)))
        if parts[0] == "resp" and self.mid is not None and len(body) > 1000:
            sock.sendall(conn.send(h11.Data(data=body[:1000])))
            self.mid.wait(30)
            body = body[1000:]
        if req.method != b"HEAD" and status not in (204, 304):
            step = 65536
            for i in range(0, len(body), step):
                sock.sendall(conn.send(h11.Data(data=body[i : i + step])))
        end = h11.EndOfMessage()
        if parts[0] == "trailers":
            end = h11.EndOfMessage(headers=RESPONSE_TRAILERS)
        sock.sendall(conn.send(end))


# What `/trailers` ends its body with: two fields any proxy passes on, and two that RFC 9110
# §6.5.1 forbids in a trailer section (l4lb drops them).
RESPONSE_TRAILERS = [
    ("grpc-status", "0"),
    ("x-checksum", "sha256=abc"),
    ("set-cookie", "smuggled=1"),
    ("content-type", "text/evil"),
]


def _resp(target: str, headers: list[tuple[str, str]]) -> tuple[int, bytes, bool, list]:
    """The `/resp` path: a response shaped by the query (cache and compression tests)."""
    from urllib.parse import parse_qs, urlsplit

    query = parse_qs(urlsplit(target).query)
    n = int(query.get("n", ["1000"])[0])
    body = (b"l4lb says hello to the cache and the compressor. " * (n // 49 + 1))[:n]
    extra = [("content-type", query.get("type", ["text/plain"])[0])]
    extra += [tuple(h.split(":", 1)) for h in query.get("h", [])]
    status = int(query.get("status", ["200"])[0])
    etag = next((v for k, v in extra if k.lower() == "etag"), None)
    inm = next((v for k, v in headers if k.lower() == "if-none-match"), None)
    if etag is not None and inm is not None and etag in [t.strip() for t in inm.split(",")]:
        return 304, b"", False, [h for h in extra if h[0] != "content-type"]
    modified = next((v for k, v in extra if k.lower() == "last-modified"), None)
    ims = next((v for k, v in headers if k.lower() == "if-modified-since"), None)
    if inm is None and modified is not None and ims == modified:
        return 304, b"", False, [h for h in extra if h[0] != "content-type"]
    encode = query.get("encode", [""])[0]  # the body sent already encoded (decompression)
    if encode:
        body = _encoded(body, encode)
        extra.append(("content-encoding", encode))
    return status, body, "chunked" in query, extra


def _encoded(body: bytes, coding: str) -> bytes:
    if coding == "gzip":
        import gzip

        return gzip.compress(body)
    if coding == "br":
        import brotli

        return brotli.compress(body)
    import zstandard

    return zstandard.ZstdCompressor().compress(body)


class RawBackend:
    """A server that records every byte it receives, per connection, and answers each request
    head (and its Content-Length body) with `answer`; after an answer starting with
    `HTTP/1.1 101` it only records. For tests of what exactly reaches a server."""

    def __init__(self, answer: bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok") -> None:
        self.answer = answer
        self.name = "raw"
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received: list[bytearray] = []
        self.heads: list[bytes] = []  # each request head answered, in order
        self.lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def data(self) -> bytes:
        """Everything received so far, on all connections."""
        with self.lock:
            return b"".join(bytes(r) for r in self.received)

    def close(self) -> None:
        self.sock.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            buf = bytearray()
            with self.lock:
                self.received.append(buf)
            threading.Thread(target=self._handle, args=(conn, buf), daemon=True).start()

    def _handle(self, conn: socket.socket, buf: bytearray) -> None:
        pending = b""
        switched = False
        with conn:
            conn.settimeout(30)
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                with self.lock:
                    buf += data
                pending += data
                while not switched and b"\r\n\r\n" in pending:
                    head, _, rest = pending.partition(b"\r\n\r\n")
                    length = 0
                    for line in head.split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        if name.strip().lower() == b"content-length":
                            length = int(value.strip())
                        elif name.strip().lower() == b"transfer-encoding":
                            length = _chunked_length(rest)
                    if length < 0 or len(rest) < length:
                        break
                    pending = rest[length:]
                    with self.lock:
                        self.heads.append(head)
                    conn.sendall(self.answer)
                    switched = self.answer.startswith(b"HTTP/1.1 101")


def _chunked_length(data: bytes) -> int:
    """How many bytes of `data` a chunked body takes (no trailers), or -1 if not all here."""
    at = 0
    while True:
        end = data.find(b"\r\n", at)
        if end < 0:
            return -1
        size = int(data[at:end].split(b";")[0], 16)
        at = end + 2 + size + 2
        if size == 0:
            return at if len(data) >= at else -1


class WsBackend:
    """A `websockets` echo server in its own thread and event loop.

    `close` asks the server's own loop to leave `serve` (which closes the server and its
    connections) and waits for that thread: stopping the loop under it instead left the
    server's close coroutine unawaited ("coroutine 'Server._close' was never awaited")."""

    def __init__(self) -> None:
        self.port = 0
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self._stop: asyncio.Future[None] | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self.ready.wait(10)

    def _run(self) -> None:
        from websockets.asyncio.server import serve

        async def echo(ws) -> None:
            async for message in ws:
                await ws.send(message)

        async def main() -> None:
            self._stop = self.loop.create_future()
            async with serve(echo, "127.0.0.1", 0, max_size=None) as server:
                self.port = server.sockets[0].getsockname()[1]
                self.ready.set()
                await self._stop

        try:
            self.loop.run_until_complete(main())
        finally:
            self.loop.close()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        stop = self._stop
        if stop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(lambda: stop.done() or stop.set_result(None))
        self._thread.join(10)
