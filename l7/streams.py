"""What the two multiplexed client adapters share: HTTP/2 (l7/h2.py) and HTTP/3 (quic/h3.py).

Both carry one request per stream with the same field rules (pseudo-headers, one authority,
cookies split over fields; RFC 9113 §8.3 and RFC 9114 §4.3), so the translation of a header
list into a `Request` and its `Exchange`, the refusals made before an exchange exists, and
the `ClientStream` surface that only delegates to the connection are written once here. The
framing, flow control and transport of each version stay in its adapter.
"""

from __future__ import annotations

import base64
import logging
import os
from typing import Any, Final

from mypy_extensions import mypyc_attr

from l4lb.errors import RemoteProtocolError
from l7.exchange import Exchange
from l7.forwarded import new_request_id, request_id_from
from l7.model import Request, Response
from l7.router import host_key
from l7.validate import check_request_head

__all__ = [
    "StreamSide",
    "head_fields",
    "open_exchange",
    "refused_exchange",
    "request_fields",
    "simple_fields",
    "status_value",
]

log: Final = logging.getLogger("l4lb")
_STATUS: Final[dict[int, bytes]] = {}


def status_value(code: int) -> bytes:
    """The `:status` value of `code`, made once per code."""
    value = _STATUS.get(code)
    if value is None:
        value = _STATUS[code] = str(code).encode()
    return value


def head_fields(response: Response) -> list[tuple[bytes, bytes]]:
    """A response head as one field list: `:status`, the fields, what stages added."""
    fields = [(b":status", status_value(response.status))]
    fields += response.fields()
    if response.extra:
        fields += response.extra
    return fields


def simple_fields(status: int, fields: list) -> list[tuple[bytes, bytes]]:
    """The head of a response l4lb makes itself (Connection means nothing here)."""
    head = [(b":status", status_value(status))]
    head += [(n, v) for n, v in fields if n != b"connection"]
    return head


def request_fields(
    fields: list[tuple[bytes, bytes]],
) -> tuple[bytes, bytes, bytes, bytes, list, bool]:
    """Split a header list into method, path, authority, scheme and the regular fields, with
    `host` first when only `:authority` came and the cookie fields joined again for HTTP/1.1
    (RFC 9113 §8.2.3, RFC 9114 §4.2.1). A `host` that disagrees with `:authority` is refused:
    one authority for routing and forwarding. The last item says whether this is a WebSocket
    over an extended CONNECT (RFC 8441: `:protocol websocket`), translated to the HTTP/1.1
    upgrade request the server expects (GET with Upgrade and a Sec-WebSocket-Key of ours).
    Raises RemoteProtocolError (400/501)."""
    method = path = authority = scheme = protocol = b""
    headers: list[tuple[bytes, bytes]] = []
    cookies: list[bytes] = []
    host = None
    for name, value in fields:
        if name[:1] == b":":
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
            elif name == b":authority":
                authority = value
            elif name == b":scheme":
                scheme = value
            elif name == b":protocol":
                protocol = value
            else:
                raise RemoteProtocolError(f"unknown pseudo-header {name!r}", 400)
        elif name == b"cookie":
            cookies.append(value)
        else:
            if name == b"host" and host is None:
                host = value
            headers.append((name, value))
    websocket = False
    if method == b"CONNECT":
        if protocol.lower() != b"websocket":
            raise RemoteProtocolError("CONNECT is only supported for WebSocket (RFC 8441)", 501)
        method, websocket = b"GET", True
        headers += [
            (b"upgrade", b"websocket"),
            (b"sec-websocket-key", base64.b64encode(os.urandom(16))),
        ]
    elif protocol:
        raise RemoteProtocolError(":protocol without CONNECT", 400)
    if not method or not path or not scheme:
        raise RemoteProtocolError("a pseudo-header is missing", 400)
    if authority and host is not None and host != authority:
        raise RemoteProtocolError(":authority and host disagree", 400)
    if not authority:
        authority = host or b""
    if host is None and authority:
        headers.insert(0, (b"host", authority))
    if cookies:
        headers.append((b"cookie", b"; ".join(cookies)))
    return method, path, authority, scheme, headers, websocket


def open_exchange(
    stream: Any,
    engine: Any,
    client: tuple[str, int],
    fields: list[tuple[bytes, bytes]],
    ended: bool,
    version: str,
) -> Exchange:
    """The exchange for a request stream's head (not started yet): the fields translated and
    checked as an HTTP/1.1 head would be (limits, smuggling, the body's length). `ended`: the
    head came with the end of the stream. Raises RemoteProtocolError (400, 413, 414, 431,
    501) for a request to refuse."""
    settings = engine.settings
    method, path, authority, scheme, headers, websocket = request_fields(fields)
    if websocket and "websocket" not in engine.upgrades:
        raise RemoteProtocolError("WebSocket is not allowed on this listener", 501)
    target = path.decode("latin-1")
    _, length, _, expect = check_request_head(
        method.decode("latin-1"),
        target,
        headers,
        "1.1",
        settings.max_uri,
        settings.max_header_bytes,
        settings.max_headers,
    )
    if length > 0 and settings.max_body and length > settings.max_body:
        raise RemoteProtocolError("request body too large", 413)
    if ended or websocket:
        body = "none"  # (a WebSocket's DATA is the tunnel's, after the server's 101)
    elif length >= 0:
        body = "length" if length > 0 else "none"
    else:
        body = "chunked"  # length unknown: chunked to an HTTP/1.1 server
    if expect:  # Expect: 100-continue means nothing on a stream: dropped
        headers = [(n, v) for n, v in headers if n != b"expect"]
    request = Request(
        method.decode("latin-1"),
        target,
        headers,
        host_key(authority.decode("latin-1")),
        scheme.decode("latin-1") or engine.scheme,
        version,
        client,
        authority,
        None if body == "chunked" else max(length, 0),
    )
    request_id = request_id_from(headers) or new_request_id()
    ex = Exchange(stream, engine, request, True, body, request_id, websocket, authority, None)
    if body == "none" and not ended and not websocket:
        ex.body_done = False  # DATA may still come (length 0): wait for the stream's end
    return ex


def refused_exchange(stream: Any, engine: Any, client: tuple[str, int], version: str) -> Exchange:
    """An exchange only to answer a request refused before it was one (its `error()`)."""
    request = Request("-", "/", [], "", engine.scheme, version, client)
    return Exchange(stream, engine, request, True, "none", new_request_id())


@mypyc_attr(allow_interpreted_subclasses=True)  # quic/h3.py's H3Stream is interpreted
class StreamSide:
    """The part of `l7.sides.ClientStream` that a stream only forwards to its connection
    (`conn`): draining, the forwarding cache, corking (the connection's `corked` count and
    `flush()`); and the tunnel calls, which reset the stream (`abort`) unless the adapter
    carries WebSocket over extended CONNECT (HTTP/2 does, l7/h2.py). Also how a stream's
    request begins, and how it is refused. A subclass sets `version` ("2", "3") and gives
    `abort()` and `cancel()`."""

    __slots__ = ("conn", "ex", "request_done", "version")
    conn: Any
    ex: Exchange | None
    request_done: bool
    version: str  # "2", "3": set by the subclass's __init__ (an instance slot, which the
    # compiled base reads natively; a class attribute of an interpreted subclass it would not)

    def begin(self, engine: Any, fields: list[tuple[bytes, bytes]], ended: bool) -> None:
        """The stream's request head came (`ended`: with the stream's end): its exchange
        starts, or the request is refused with the status `open_exchange` raised."""
        try:
            ex = open_exchange(self, engine, self.conn.client, fields, ended, self.version)
        except RemoteProtocolError as exc:
            self.refuse_head(engine, exc.status_hint, str(exc))
            return
        self.request_done = ended
        self.ex = ex
        ex.start()

    def refuse_head(self, engine: Any, status: int, message: str) -> None:
        """A request refused before it became an exchange: an error response (the adapter
        resets the stream after it if its body is still coming)."""
        self._log_refusal(status, message)
        ex = self.ex = refused_exchange(self, engine, self.conn.client, self.version)
        ex.error(status, message)

    def refuse(self, status: int, message: str) -> None:
        """A request refused while its body came in (413): answered if nothing was sent yet,
        else the stream is cancelled."""
        self._log_refusal(status, message)
        ex = self.ex
        if ex is not None and not ex.head_sent and not ex.finished:
            upstream, ex.upstream = ex.upstream, None
            if upstream is not None:
                upstream.exchange = None
                upstream.abort()
            ex.error(status, message)
        else:
            self.cancel()

    def _log_refusal(self, status: int, message: str) -> None:
        client = self.conn.client
        log.info("http%s %s:%d: %d %s", self.version, client[0], client[1], status, message)

    def cancel(self) -> None:
        raise NotImplementedError

    @property
    def draining(self) -> bool:
        return self.conn.draining

    @property
    def forwarding(self) -> tuple[Any, bytes, bytes]:
        return self.conn.forwarding

    @forwarding.setter
    def forwarding(self, value: tuple[Any, bytes, bytes]) -> None:
        self.conn.forwarding = value

    @property
    def touched(self) -> bool:
        return False

    @touched.setter
    def touched(self, value: bool) -> None:
        pass

    def cork(self) -> None:
        self.conn.corked += 1

    def uncork(self) -> None:
        """The end of an upstream read. The connection stays corked to the end of this turn
        of the loop (`release`), so the responses of every server read in one poll leave in
        one write: one TLS record and one send on HTTP/2, packets filled on HTTP/3."""
        conn = self.conn
        conn.corked -= 1
        if conn.corked <= 0:
            conn.corked = 1  # held for `release`, which is the only one scheduled
            conn.loop.call_soon(release, conn)

    def abort(self) -> None:
        raise NotImplementedError

    def write(self, data: bytes) -> None:
        self.abort()

    def tunnel_eof(self, side: str) -> None:
        self.abort()

    def end_tunnel(self) -> None:
        self.abort()

    def tunnel(self, upstream: Any, pending: bytes) -> None:
        self.abort()


def release(conn: Any) -> None:
    """The turn of the loop that corked `conn` (`StreamSide.uncork`) is over: what its
    streams queued goes out."""
    conn.corked -= 1
    if conn.corked <= 0:
        conn.corked = 0
        conn.flush()
