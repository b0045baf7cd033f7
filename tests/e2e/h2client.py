"""A small blocking HTTP/2 client for the end-to-end tests, on the python-hyper `h2` library.

It connects over TLS with ALPN `h2` (or in clear text with prior knowledge), sends requests
with bodies that honour the server's flow control, and reads back what a test asserts on:
each stream's status, headers, body, trailers and reset code, and the connection's GOAWAY.
Validation of what it sends is off, so a test can send what a well-behaved client would
not (uppercase names, connection-specific fields, missing pseudo-headers); `send_raw` writes
bytes as they are, for frames h2 would never build. Every wait is bounded by `timeout`.
"""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

__all__ = ["H2Client", "H2Response", "h2_get"]


@dataclass
class H2Response:
    """What came back on one stream."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    trailers: dict[str, str] = field(default_factory=dict)
    informational: list[int] = field(default_factory=list)
    informational_fields: list[dict[str, str]] = field(default_factory=list)
    reset: int | None = None  # the RST_STREAM error code, if the server reset the stream
    ended: bool = False  # END_STREAM seen
    hold: bool = False  # do not give the stream's flow-control window back (a slow reader)

    @property
    def done(self) -> bool:
        return self.ended or self.reset is not None


class H2Client:
    """One HTTP/2 connection to 127.0.0.1:`port`. `window` is the client's
    SETTINGS_INITIAL_WINDOW_SIZE (0: the server may send no response body at all)."""

    def __init__(
        self,
        port: int,
        *,
        tls: bool = True,
        authority: str = "example.com",
        timeout: float = 10.0,
        window: int = 1 << 24,
        settings: dict[int, int] | None = None,
    ) -> None:
        self.authority = authority
        self.timeout = timeout
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.set_alpn_protocols(["h2"])
            sock = ctx.wrap_socket(sock, server_hostname=authority.split(":")[0])
            assert sock.selected_alpn_protocol() == "h2", sock.selected_alpn_protocol()
        self.sock = sock
        config = h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            validate_inbound_headers=False,
        )
        self.conn = h2.connection.H2Connection(config)
        initial = {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window}
        initial.update(settings or {})
        self.conn.local_settings = h2.settings.Settings(client=True, initial_values=initial)
        self.conn.initiate_connection()
        if window > 65535:
            self.conn.increment_flow_control_window(window)
        self.streams: dict[int, H2Response] = {}
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.closed = False  # the server closed the TCP connection
        self.events: list = []
        self.flush()

    # -- sending -------------------------------------------------------------------------

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.closed:
            try:
                self.sock.sendall(data)
            except OSError:
                self.closed = True

    def send_raw(self, data: bytes) -> None:
        """Bytes written as they are (frames built by hand)."""
        self.flush()
        try:
            self.sock.sendall(data)
        except OSError:
            self.closed = True

    def request(
        self,
        method: str = "GET",
        path: str = "/",
        headers: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
        *,
        end: bool = True,
        pseudo: list[tuple[str, str]] | None = None,
        hold: bool = False,
    ) -> int:
        """Open a stream and send its head (and `body`); returns the stream id. `pseudo`
        replaces the pseudo-header fields; `end=False` leaves the body open."""
        sid = self.conn.get_next_available_stream_id()
        if pseudo is None:
            pseudo = [
                (":method", method),
                (":scheme", "https"),
                (":authority", self.authority),
                (":path", path),
            ]
        fields = [(n.encode(), v.encode()) for n, v in pseudo + (headers or [])]
        self.streams[sid] = H2Response(hold=hold)
        self.conn.send_headers(sid, fields, end_stream=end and not body)
        self.flush()
        if body:
            self.send_body(sid, body, end=end)
        return sid

    def send_body(self, sid: int, data: bytes, *, end: bool = True) -> None:
        """Send `data` on stream `sid` as the server's windows allow, reading meanwhile."""
        view = memoryview(data)
        deadline = time.monotonic() + self.timeout
        while view:
            window = min(
                self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size
            )
            if window <= 0:
                if time.monotonic() > deadline or self.goaway is not None or self.closed:
                    raise TimeoutError(f"stream {sid}: the server's window stays closed")
                if self.streams[sid].done:
                    return  # answered (or reset) before the whole body went
                self.read_once(deadline - time.monotonic())
                continue
            chunk, view = view[:window], view[window:]
            self.conn.send_data(sid, bytes(chunk), end_stream=end and not view)
            self.flush()
        if end and not data:
            self.conn.end_stream(sid)
            self.flush()

    def reset(self, sid: int, code: int = 8) -> None:
        self.conn.reset_stream(sid, code)
        self.flush()

    def ping(self, payload: bytes = b"12345678") -> None:
        self.conn.ping(payload)
        self.flush()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> H2Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- receiving -----------------------------------------------------------------------

    def read_once(self, timeout: float) -> bool:
        """One read from the socket (at most `timeout` seconds); False once it is closed."""
        if self.closed:
            return False
        self.sock.settimeout(max(timeout, 0.01))
        try:
            data = self.sock.recv(1 << 20)
        except TimeoutError:
            return True
        except (OSError, ssl.SSLError):
            data = b""
        if not data:
            self.closed = True
            return False
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.closed = True
            return False
        for event in events:
            self.on_event(event)
        self.flush()
        return True

    def on_event(self, event) -> None:
        self.events.append(event)
        sid = getattr(event, "stream_id", None)
        stream = self.streams.get(sid) if sid else None
        if isinstance(event, h2.events.ResponseReceived) and stream:
            fields = {n.decode(): v.decode() for n, v in event.headers}
            stream.status = int(fields.pop(":status"))
            stream.headers = fields
        elif isinstance(event, h2.events.InformationalResponseReceived) and stream:
            stream.informational.append(int(dict(event.headers)[b":status"]))
            fields = {n.decode(): v.decode() for n, v in event.headers}
            stream.informational_fields.append(fields)
        elif isinstance(event, h2.events.TrailersReceived) and stream:
            stream.trailers = {n.decode(): v.decode() for n, v in event.headers}
        elif isinstance(event, h2.events.DataReceived):
            if stream is not None:
                stream.body += event.data
            n = event.flow_controlled_length
            if n:
                if stream is not None and stream.hold:
                    self.conn.increment_flow_control_window(n)  # the connection's only
                else:
                    try:
                        self.conn.acknowledge_received_data(n, event.stream_id)
                    except h2.exceptions.StreamClosedError:
                        pass
        elif isinstance(event, h2.events.StreamEnded) and stream:
            stream.ended = True
        elif isinstance(event, h2.events.StreamReset) and stream:
            stream.reset = int(event.error_code)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event
            if event.error_code == 0:
                # A graceful GOAWAY (RFC 9113 §6.8): streams up to its last stream id still
                # finish, but h2 closes its state machine on any GOAWAY and would refuse
                # their frames. Back to open, to read them.
                self.conn.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN

    def wait(self, predicate, timeout: float | None = None) -> bool:
        """Read until `predicate()` holds, the connection closes, or `timeout` passes."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0 or not self.read_once(left):
                return predicate()
        return True

    def response(self, sid: int, timeout: float | None = None) -> H2Response:
        """Read until stream `sid` ends or is reset (or the connection goes)."""
        stream = self.streams[sid]
        self.wait(lambda: stream.done, timeout)
        return stream

    def wait_goaway(self, timeout: float | None = None) -> h2.events.ConnectionTerminated:
        """Read until a GOAWAY came; AssertionError if none does."""
        self.wait(lambda: self.goaway is not None, timeout)
        assert self.goaway is not None, "no GOAWAY"
        return self.goaway

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Read (and drop) until the server closes the connection."""
        return self.wait(lambda: self.closed, timeout)


def h2_get(port: int, path: str = "/", **kw) -> H2Response:
    """One GET on a new connection."""
    headers = kw.pop("headers", None)
    with H2Client(port, **kw) as client:
        return client.response(client.request("GET", path, headers))
