"""WebSocket and other upgrades: after an allowed 101 the exchange becomes a tunnel, bytes
flowing untouched both ways (DESIGN.md: upgrades leave the pipeline after the 101).

Which upgrades are allowed is `l7.upgrade`'s; this is what the exchange does once the
server has switched protocols, and when either way of the tunnel ends. Plain functions of
the `Exchange`; its `on_response_upgrade`, `on_tunnel_eof` and `tunnel_closed` (called by
the adapters) hand over here. The per-chunk `on_tunnel_data` stays on the exchange.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from l7.finish import finish

if TYPE_CHECKING:
    from l7.exchange import Exchange

__all__ = ["on_response_upgrade", "on_tunnel_eof", "tunnel_closed"]


def on_response_upgrade(ex: Exchange, rest: bytes) -> None:
    """The server switched protocols: from here on, bytes flow untouched both ways."""
    if ex.status != 101:
        ex.conn.abort()
        finish(ex)
        return
    if rest:
        ex.conn.write(rest)
    ex.conn.tunnel(ex.upstream, ex.upgrade_rest)
    ex.upgrade_rest = b""


def on_tunnel_eof(ex: Exchange, side: str) -> bool:
    """The server ended its way of the tunnel: "server" (EOF: passed on, see
    `H1Server.tunnel_eof`), "server_lost" (its connection closed: TLS, which cannot
    half-close) or "server_reset"."""
    if side == "server":
        ex.conn.tunnel_eof("server")
        return True
    if side == "server_lost":
        ex.conn.end_tunnel()
        return False
    ex.conn.abort()
    finish(ex)
    return False


def tunnel_closed(ex: Exchange) -> None:
    """The client connection ends the tunnel (both ways have ended): log it now."""
    conn, ex.upstream = ex.upstream, None
    if conn is not None:
        conn.exchange = None
    finish(ex)
