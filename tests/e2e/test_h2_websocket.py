"""WebSocket over HTTP/2 (RFC 8441): an extended CONNECT stream (`:protocol websocket`) is
relayed to an HTTP/1.1 WebSocket server as its upgrade request, and after the server's 101
the stream carries the WebSocket frames both ways, beside ordinary streams on the same
connection. A raw h2 client (tests/e2e/h2client.py) writes the frames by hand; the server is
the `websockets` library's."""

from __future__ import annotations

import os
import struct

import h2.settings
import pytest

from tests.e2e.h2client import H2Client
from tests.e2e.helpers import free_port, make_cert, pool_toml
from tests.e2e.httpbackend import WsBackend


@pytest.fixture
def ws_proxy(proxy, http_backends, tmp_path):
    """An https listener: `/ws` to a WebSocket echo server, the rest to an HTTP backend;
    `upgrades` is the listener's setting."""
    made = []

    def start(upgrades: str = '["websocket"]'):
        ws = WsBackend()
        made.append(ws)
        (web,) = http_backends("web")
        cert, key = make_cert(tmp_path, "localhost")
        port = free_port()
        proxy(
            f'[listener.web]\nbind = "127.0.0.1:{port}"\nprotocol = "https"\npool = "web"\n'
            f'[[listener.web.certs]]\ncert = "{cert}"\nkey = "{key}"\n'
            f"[listener.web.http]\nupgrades = {upgrades}\n"
            '[[listener.web.routes]]\nname = "ws"\npath_prefix = "/ws"\npool = "ws"\n'
            + pool_toml("ws", [f'address = "{ws.address}"'])
            + pool_toml("web", [f'address = "{web.address}"'])
        )
        return port

    yield start
    for ws in made:
        ws.close()


def frame(payload: bytes, opcode: int = 1) -> bytes:
    """One masked client frame (RFC 6455 §5.2), FIN set."""
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    else:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def unframe(data: bytes) -> tuple[int, bytes, bytes]:
    """(opcode, payload, rest) of one unmasked server frame at the start of `data`."""
    opcode, n, at = data[0] & 0x0F, data[1] & 0x7F, 2
    if n == 126:
        n, at = struct.unpack("!H", data[2:4])[0], 4
    return opcode, data[at : at + n], data[at + n :]


CONNECT = [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "https")]


def open_ws(c: H2Client, path: str = "/ws") -> int:
    pseudo = [*CONNECT, (":path", path), (":authority", "localhost")]
    return c.request(pseudo=pseudo, headers=[("sec-websocket-version", "13")], end=False)


def test_websocket_over_an_h2_stream(ws_proxy):
    port = ws_proxy()
    with H2Client(port, authority="localhost") as c:
        assert c.wait(
            lambda: (
                c.conn.remote_settings.get(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL) == 1
            )
        )
        sid = open_ws(c)
        stream = c.streams[sid]
        assert c.wait(lambda: stream.status or stream.done)
        assert stream.status == 200 and not stream.done, stream
        assert "sec-websocket-accept" not in stream.headers and "upgrade" not in stream.headers
        # An ordinary request on the same connection meanwhile.
        other = c.response(c.request("GET", "/plain"))
        assert other.status == 200 and other.body == b"web\n"
        for message in (b"hello", b"x" * 5000):
            stream.body = b""
            c.send_body(sid, frame(message), end=False)
            want = len(message) + (2 if len(message) < 126 else 4)
            assert c.wait(lambda want=want: len(stream.body) >= want), stream
            assert unframe(stream.body)[:2] == (1, message)
        # A close frame: the server answers with its own and closes; the stream ends.
        stream.body = b""
        c.send_body(sid, frame(struct.pack("!H", 1000), opcode=8), end=True)
        assert c.wait(lambda: stream.done), stream
        assert stream.reset is None and unframe(stream.body)[0] == 8


def test_extended_connect_not_offered_without_websocket(ws_proxy):
    port = ws_proxy(upgrades="[]")
    with H2Client(port, authority="localhost") as c:
        c.wait(lambda: bool(c.conn.remote_settings), 2)
        assert c.conn.remote_settings.get(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL, 0) == 0
        # Plain CONNECT (no :protocol) is refused as before, and the connection goes on.
        sid = c.request(pseudo=[(":method", "CONNECT"), (":authority", "localhost:443")], end=False)
        r = c.response(sid)
        assert r.status == 501 and b"only supported for WebSocket" in r.body
        assert c.response(c.request("GET", "/")).status == 200  # the connection goes on
        # `:protocol` where it was not offered is an undefined pseudo-header: malformed
        # (RFC 9113 §8.3), the stream reset, the connection goes on.
        r = c.response(open_ws(c))
        assert (r.reset, r.status, c.goaway) == (1, 0, None)  # PROTOCOL_ERROR
        assert c.response(c.request("GET", "/")).status == 200
