"""Which protocol upgrades (RFC 9110 §7.8) l4lb lets through, decided from the heads alone.

An upgrade leaves the pipeline: after the server's 101 the connection is an opaque tunnel, so
whatever the client sends next reaches the server past every route, header rule and check.
For WebSocket that is the point; for `h2c` it is the known smuggling attack (a second request
sent inside the "HTTP/2" tunnel goes to the server unrouted). So only protocols a listener
lists (`[listener.NAME.http] upgrades`, default `["websocket"]`) may upgrade; any other
Upgrade is a hop-by-hop field like the rest: stripped, and the request goes on as plain HTTP
(RFC 9110 §7.8: "A server MAY ignore a received Upgrade header field"). nginx does the same
by default (it forwards Upgrade only when told to), HAProxy removes `Upgrade: h2c`.

A 101 is accepted only for an upgrade that was allowed, and only to a protocol the client
offered and the listener allows; any other 101 is a bad response (502), never a tunnel.
"""

from __future__ import annotations

from collections.abc import Iterable

from l7.model import Headers

__all__ = ["DEFAULT_UPGRADES", "NEVER_UPGRADES", "accepted_upgrade", "allowed_upgrade"]

DEFAULT_UPGRADES = ("websocket",)
# Never tunnelled, even when configured: the requests inside would bypass the pipeline.
NEVER_UPGRADES = frozenset({"h2c", "h2", "http/2", "http/2.0"})


def _protocols(values: Iterable[bytes]) -> list[str]:
    """The protocol names of Upgrade field values (`name[/version]`, comma-separated),
    lower-case and without the version; an empty element is kept as "" (never allowed)."""
    out = []
    for value in values:
        for item in value.split(b","):
            name = item.strip(b" \t").partition(b"/")[0]
            out.append(name.decode("latin-1").lower())
    return out


def allowed_upgrade(headers: Headers, version: str, allowed: frozenset[str]) -> bool:
    """May this request upgrade? Only HTTP/1.1 (RFC 9110 §7.8: an HTTP/1.0 Upgrade is
    ignored), with `upgrade` among the Connection options, and every protocol offered in
    Upgrade among `allowed` (lower-case names): a server must not be able to pick one l4lb
    would not have allowed from a list such as `websocket, h2c`. `headers` have lower-case
    names. Called only for a request the parser saw as an upgrade."""
    if version != "1.1" or not allowed:
        return False
    offered = [v for n, v in headers if n == b"upgrade"]
    if not offered:
        return False
    options = [v for n, v in headers if n == b"connection"]
    if b"upgrade" not in {o.strip(b" \t").lower() for v in options for o in v.split(b",")}:
        return False
    return all(p in allowed for p in _protocols(offered))


def accepted_upgrade(request: Headers, response_hop: Headers, allowed: frozenset[str]) -> bool:
    """Is a 101 with these hop-by-hop response fields a switch l4lb may tunnel, for an
    allowed upgrade `request`? Its Upgrade must name exactly one protocol, allowed and
    offered by the client (RFC 9110 §7.8: the server names the protocol it switches to)."""
    chosen = _protocols(v for n, v in response_hop if n == b"upgrade")
    if len(chosen) != 1 or chosen[0] not in allowed:
        return False
    return chosen[0] in _protocols(v for n, v in request if n == b"upgrade")
