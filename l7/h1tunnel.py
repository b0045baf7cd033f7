"""The HTTP/1.1 client adapter's upgrades: an upgrade l4lb declines goes on as plain HTTP;
after an allowed 101 the client connection and the server connection talk directly, and
each way's EOF is passed on until both have ended.

Plain functions of the `H1Server` (l7/h1.py), which holds the connection's state; kept
apart from the parsing of requests, which is the hot path. `H1Server.tunnel`, `tunnel_eof`
and `end_tunnel` (its `l7.sides.ClientStream` surface) hand over here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from l7.h1errors import fail
from l7.h11parser import H11BodyReader, H11RequestParser

if TYPE_CHECKING:
    from l7.h1 import H1Server
    from l7.upstream import UpstreamConn

__all__ = [
    "decline_upgrade",
    "end_tunnel",
    "tunnel",
    "tunnel_eof",
    "upgraded",
]


def upgraded(conn: H1Server, data: bytes, offset: int) -> bytes:
    """httptools stopped after a request it took for an upgrade, at `offset` in `data`.
    Return what is left to parse as the next request (b"" if nothing, or if the rest
    waits for the server's 101)."""
    if conn.declined:
        # An upgrade l4lb declined: the request goes on as plain HTTP (it may even be
        # answered already). llhttp ended it at its head (httptools skips the body of an
        # upgrade), so its body, if any, is read first.
        conn.declined = False
        skipped, conn.skipped = conn.skipped, None
        if skipped is not None:
            conn.parser = H11BodyReader(conn, conn.parser, skipped[0], skipped[1])
        return data[offset:]
    ex = conn.building or (conn.exchanges[-1] if conn.exchanges else None)
    if ex is not None and ex.upgrade:
        ex.upgrade_rest += data[offset:]
        conn.pause_reading()  # the rest waits for the server's 101
    else:
        fail(conn, 400, "unexpected upgrade")
    return b""


def decline_upgrade(conn: H1Server, chunked: bool, length: int) -> None:
    """The parser saw an upgrade that l4lb does not allow: the request goes on as plain
    HTTP (its Upgrade and Connection go with the other hop-by-hop fields) and what
    follows it is the next request. h11 reads its body and goes on by itself; httptools
    stops after its head (see `upgraded`)."""
    if isinstance(conn.parser, H11RequestParser):
        conn.parser.decline_upgrade()
        return
    conn.declined = True
    if chunked or length > 0:
        conn.skipped = (chunked, length)
        conn.hold_end = True


def tunnel(conn: H1Server, upstream: UpstreamConn | None, pending: bytes) -> None:
    """After a 101: the client and the server talk directly; `pending` is what the
    client sent after its request head."""
    if upstream is None:
        conn.abort()
        return
    conn.peer = upstream
    conn.disarm()
    if pending:
        upstream.write(pending)
    conn.resume_reading()
    idle = conn.engine_of().config.idle_timeout
    conn.touched = True
    conn.arm("tunnel", idle)


def tunnel_eof(conn: H1Server, side: str) -> None:
    """`side` ("client" or "server") ended its way of the tunnel: pass the EOF on, and
    once both ways have ended close both connections (`end_tunnel`). asyncio keeps a
    transport that has received and sent EOF open until it is closed, so without this a
    closed WebSocket held its two descriptors until the idle timeout. A TLS side cannot
    half-close (asyncio's TLS transports cannot send EOF alone): there the EOF ends the
    tunnel, as `l4lb.streamrelay` does."""
    peer = conn.peer
    if peer is None:
        return
    if side == "client":
        conn.client_ended = True
        ended, transport = conn.server_ended, peer.transport
    else:
        conn.server_ended = True
        ended, transport = conn.client_ended, conn.transport
    if not ended and transport is not None and transport.can_write_eof():
        transport.write_eof()
    else:
        end_tunnel(conn)


def end_tunnel(conn: H1Server) -> None:
    """Close both sides of the tunnel, each after what is buffered for it is written, and
    log the exchange now (its `total` is the tunnel's lifetime)."""
    peer, conn.peer = conn.peer, None
    if peer is None:
        return
    conn.closing = True
    if conn.exchanges:
        conn.exchanges[0].tunnel_closed()
    peer.close()
    conn.close()
