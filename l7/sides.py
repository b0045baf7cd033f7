"""What the pipeline asks of the adapters on either side of it, as typing protocols.

An `Exchange` (l7/exchange.py) holds a `ClientStream` (the client side of one request: an
HTTP/1.1 connection, or one HTTP/2 stream) and, while it talks to a server, a `ServerStream`
(an HTTP/1.1 connection to the server today). The adapters call the exchange's `on_*` and
`body_*` methods; the exchange calls these. Neither side imports the other, so the imports
point one way: adapters -> exchange (pipeline) -> stages, with this module below all three.

Only the adapters know the wire: framing (Content-Length, chunked, close-delimited, DATA
frames), keep-alive, flow control, and how a head is serialized. The pipeline says what to
send and when, never how.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from l7.model import Headers, Response

__all__ = ["ClientStream", "ExchangeEvents", "ServerStream"]


class ClientStream(Protocol):
    """The client side of one request. `draining` asks the pipeline to end the connection
    after this response (shutdown or reload); `forwarding` is the adapter's per-connection
    cache slot for the forwarding fields (the same client and authority on every request of a
    connection); `touched` marks tunnel activity for the idle check."""

    draining: bool
    forwarding: tuple[Any, bytes, bytes]
    touched: bool

    def send_interim(self, ex: Any, response: Response) -> None:
        """A 1xx response (not 101) before the final one, with its fields (103 Early
        Hints' Link)."""

    def send_head(self, ex: Any, response: Response) -> None:
        """The final response head; the adapter picks the framing and sets `ex.framing`
        unless the pipeline already said "none" (no body: HEAD, 204, 304, 101)."""

    def send_data(self, ex: Any, data: bytes) -> None:
        """A piece of the response body (never empty)."""

    def send_end(self, ex: Any) -> None:
        """The response body is complete; `ex.response_trailers` follow it if the framing
        can carry them."""

    def send_simple(self, ex: Any, status: int, fields: Headers, body: bytes) -> None:
        """A whole response made by l4lb (fixed responses, redirects, errors)."""

    def write(self, data: bytes) -> None:
        """Raw bytes for a tunnel (after a 101)."""

    def tunnel_eof(self, side: str) -> None:
        """The server ended its way of a tunnel (EOF): pass it on."""

    def end_tunnel(self) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def abort(self) -> None: ...
    def cork(self) -> None: ...
    def uncork(self) -> None: ...
    def tunnel(self, upstream: Any, pending: bytes) -> None: ...
    def exchange_done(self, ex: Any) -> None: ...


class ExchangeEvents(Protocol):
    """What a server adapter reports to the exchange it carries (l7/exchange.py)."""

    conn: ClientStream
    request: Any
    engine: Any
    route: Any
    target: str
    request_line: bytes | None
    request_id: str
    authority: bytes
    upgrade: bool
    body_kind: str
    request_trailers: Headers | None

    def on_response_head(self, response: Response, hop: Headers) -> None: ...
    def on_response_body(self, data: bytes) -> None: ...
    def on_response_trailers(self, fields: Headers) -> None: ...
    def on_response_complete(self) -> None: ...
    def on_response_upgrade(self, rest: bytes) -> None: ...
    def on_upstream_error(self, reason: str) -> None: ...
    def on_tunnel_data(self, data: bytes) -> None: ...
    def on_tunnel_eof(self, side: str) -> bool: ...
    def response_timeout(self) -> None: ...
    def pause_client_reading(self) -> None: ...
    def resume_client_reading(self) -> None: ...


class ServerStream(Protocol):
    """One server connection while it carries an exchange's request."""

    exchange: Any
    reusable: bool

    def start(self, ex: Any, fresh: bool = False) -> None: ...

    def send_request(self, ex: Any) -> None:
        """The request head (after the header-policy stage: forwarding fields, request id,
        traceparent, route rewrites)."""

    def send_body(self, data: bytes, chunked: bool) -> None:
        """A piece of the request body; `chunked`: its length was not known in advance."""

    def end_body(self, chunked: bool) -> None:
        """The request body is complete; `ex.request_trailers` follow it when `chunked`."""

    def write(self, data: bytes) -> None: ...
    def arm(self, seconds: float) -> None: ...
    def disarm(self) -> None: ...
    def skip_body(self) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def abort(self) -> None: ...
    def release(self) -> None: ...
