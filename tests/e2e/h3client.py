"""A small HTTP/3 client for the tests: aioquic's sans-IO QuicConnection and H3Connection over
one blocking UDP socket, stepped by hand (send, receive with the timer's timeout, handle
timers). Being synchronous makes a port change (NAT rebinding) a matter of swapping the
socket. Every wait is bounded in time.
"""

from __future__ import annotations

import select
import socket
import ssl
import time

from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import ConnectionTerminated, HandshakeCompleted, StreamReset

__all__ = ["ClientH3", "H3Client", "H3Error"]


class H3Error(Exception):
    pass


class ClientH3(H3Connection):
    """aioquic's H3 for the client, told which responses have no content: aioquic checks each
    response's content-length against its DATA, but a response to HEAD, a 204 and a 304 may
    carry a content-length with no DATA (RFC 9114 §4.1.2, RFC 9110 §6.4.1), and aioquic then
    closes the whole connection with H3_MESSAGE_ERROR."""

    def __init__(self, quic: QuicConnection) -> None:
        super().__init__(quic)
        self.no_content: set[int] = set()  # stream ids: HEAD requests, 204 and 304 responses

    def _decode_headers(self, stream_id: int, frame_data: bytes | None) -> list:
        headers = super()._decode_headers(stream_id, frame_data)
        if (b":status", b"204") in headers or (b":status", b"304") in headers:
            self.no_content.add(stream_id)
        return headers

    def _check_content_length(self, stream) -> None:
        if stream.stream_id not in self.no_content:
            super()._check_content_length(stream)


class H3Client:
    """`ticket`: a session ticket to resume with (0-RTT); `tickets` collects the ones the
    server issues. `wait=False` returns before the handshake (requests sent then go in 0-RTT);
    `wait_connected()` finishes it. `extra_alpn` makes the ClientHello bigger (two datagrams)."""

    def __init__(
        self,
        port: int,
        server_name: str = "localhost",
        host: str = "127.0.0.1",
        *,
        ticket=None,
        wait: bool = True,
        extra_alpn: list[str] | None = None,
        max_datagram_size: int = 1200,
    ):
        config = QuicConfiguration(
            is_client=True,
            alpn_protocols=[*H3_ALPN, *(extra_alpn or [])],
            max_datagram_size=max_datagram_size,
        )
        config.server_name = server_name
        config.verify_mode = ssl.CERT_NONE  # a self-signed certificate
        config.session_ticket = ticket
        self.tickets: list = []
        self.early_data_accepted: bool | None = None
        self.addr = (host, port)
        self.quic = QuicConnection(configuration=config, session_ticket_handler=self.tickets.append)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.h3: ClientH3 | None = None
        self.connected = False
        self.terminated: ConnectionTerminated | None = None
        self.responses: dict[int, dict] = {}
        self.received: list[bytes] = []  # every datagram, for the tests that look at them
        self.quic.connect(self.addr, now=time.monotonic())
        self.h3 = ClientH3(self.quic)
        if wait:
            self.wait_connected()

    def wait_connected(self) -> None:
        self.step_until(lambda: self.connected or self.terminated is not None)
        if not self.connected:
            raise H3Error(f"handshake failed: {self.terminated}")

    def peer_name(self) -> str:
        """The common name of the certificate the server showed."""
        cert = self.quic.tls._peer_certificate
        return cert.subject.rfc4514_string()

    def rebind(self, ping: bool = False) -> None:
        """A NAT rebinding: the same connection from a new local port. `ping`: send a PING
        from it at once, as a client that moves does (RFC 9000 §9.2): while it only receives,
        the server still sends to the old port and nothing tells it of the new one."""
        self.sock.close()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        if ping:
            self.quic.send_ping(0)
            self.flush()

    def flush(self) -> None:
        for data, addr in self.quic.datagrams_to_send(now=time.monotonic()):
            self.sock.sendto(data, addr)

    def step(self, wait: float) -> None:
        self.flush()
        timer = self.quic.get_timer()
        now = time.monotonic()
        timeout = wait if timer is None else max(0.0, min(wait, timer - now))
        ready, _, _ = select.select([self.sock], [], [], timeout)
        for _ in range(8 if ready else 0):  # a few of those that came, then events and ACKs
            try:
                data, addr = self.sock.recvfrom(65535, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            if len(self.received) < 1000:
                self.received.append(data)
            self.quic.receive_datagram(data, addr, now=time.monotonic())
        timer = self.quic.get_timer()
        if timer is not None and time.monotonic() >= timer:
            self.quic.handle_timer(now=time.monotonic())
        self.events()
        self.flush()

    def events(self) -> None:
        while (event := self.quic.next_event()) is not None:
            if isinstance(event, HandshakeCompleted):
                self.connected = True
                self.early_data_accepted = event.early_data_accepted
            elif isinstance(event, ConnectionTerminated):
                self.terminated = event
            elif isinstance(event, StreamReset):
                r = self.responses.setdefault(event.stream_id, self._new())
                r["reset"] = event.error_code
                r["done"] = True
            assert self.h3 is not None
            for h in self.h3.handle_event(event):
                r = self.responses.setdefault(h.stream_id, self._new())
                if isinstance(h, HeadersReceived):
                    r["headers"].extend(h.headers)
                elif isinstance(h, DataReceived):
                    r["body"].append(h.data)
                if getattr(h, "stream_ended", False):
                    r["done"] = True

    @staticmethod
    def _new() -> dict:
        return {"headers": [], "body": [], "done": False, "reset": None}

    def step_until(self, predicate, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate() and time.monotonic() < deadline:
            self.step(min(0.05, max(0.0, deadline - time.monotonic())))
        return predicate()

    def send(
        self,
        method: str,
        path: str,
        authority: str = "localhost",
        headers: list[tuple[bytes, bytes]] | None = None,
        body: bytes = b"",
    ) -> int:
        assert self.h3 is not None
        sid = self.quic.get_next_available_stream_id()
        if method == "HEAD":
            self.h3.no_content.add(sid)
        fields = [
            (b":method", method.encode()),
            (b":scheme", b"https"),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
            *(headers or []),
        ]
        self.h3.send_headers(sid, fields, end_stream=not body)
        if body:
            for i in range(0, len(body), 65536):
                self.h3.send_data(sid, body[i : i + 65536], end_stream=i + 65536 >= len(body))
                self.step(0)
        self.flush()
        return sid

    def response(self, sid: int, timeout: float = 20.0) -> tuple[int, dict[str, str], bytes]:
        if not self.step_until(lambda: self.responses.get(sid, {}).get("done"), timeout):
            raise H3Error(f"no response on stream {sid}")
        r = self.responses[sid]
        if r["reset"] is not None:
            raise H3Error(f"stream {sid} reset: {r['reset']:#x}")
        fields = {n.decode(): v.decode() for n, v in r["headers"]}
        return int(fields.pop(":status")), fields, b"".join(r["body"])

    def request(self, method: str, path: str, **kw) -> tuple[int, dict[str, str], bytes]:
        return self.response(self.send(method, path, **kw))

    def close(self) -> None:
        self.quic.close()
        self.flush()
        self.sock.close()
