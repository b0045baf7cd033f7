"""The one request/response model every HTTP version is translated to (DESIGN.md, "L7").

Protocol adapters (HTTP/1.1 and HTTP/2 on the client side, HTTP/3 next; HTTP/1.1 towards
servers) build these from wire events and write them back; pipeline stages (routing, headers,
limits, retries, breaker, access log, and later cache, compression, rate limits, WAF, auth)
read and change them and never see the wire. Field names are lower-case `bytes` and values
`bytes`, in order, with repeats kept: that is what httptools, h11, h2 and aioquic hand out,
and it keeps the hot path free of decoding. Bodies are not part of the model: they stream
separately, and the model says only whether there is one and its length when known.

One concession to speed: a `Response` read by the HTTP/1.1 server adapter carries its
end-to-end fields already as `name: value` lines (`lines`), because HTTP/1.1 to HTTP/1.1 is
the common hop and the lines then go out unchanged. `fields()` gives them as pairs to any
stage or adapter that needs them (the pairs are made on first use).
"""

from __future__ import annotations

from urllib.parse import parse_qsl

__all__ = ["Headers", "Request", "Response", "header", "split_line"]

Headers = list[tuple[bytes, bytes]]


def header(headers: Headers, name: bytes) -> bytes | None:
    """The first value of `name` (lower-case), or None."""
    for key, value in headers:
        if key == name:
            return value
    return None


class Request:
    """One request head. `target` is the request-target in origin form (path and query) as
    received; `path` and `query` are split from it; `authority` is the Host header or
    `:authority` as sent (port included) and `host` its routing key (lower-case, no port);
    `version` is the client's HTTP version ("1.0", "1.1", "2", "3"). `length` is the body's
    length: 0 for none, None when it is not known in advance (chunked, or HTTP/2 and HTTP/3
    without Content-Length).

    A plain class with slots, not a dataclass: one is made per request, and a dataclass's
    generated `__init__` stays interpreted Python in the compiled build (about 3,500
    instructions per request, bench/http_inproc.py under callgrind)."""

    __slots__ = (
        "_params",
        "authority",
        "client",
        "headers",
        "host",
        "length",
        "method",
        "path",
        "query",
        "scheme",
        "target",
        "version",
    )

    def __init__(
        self,
        method: str,
        target: str,
        headers: Headers,
        host: str = "",
        scheme: str = "http",
        version: str = "1.1",
        client: tuple[str, int] = ("", 0),
        authority: bytes = b"",
        length: int | None = 0,
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.host = host
        self.scheme = scheme
        self.version = version
        self.client = client
        self.authority = authority
        self.length = length
        path, _, query = target.partition("?")
        self.path = path or "/"
        self.query = query
        self._params: dict[str, list[str]] | None = None

    def __repr__(self) -> str:
        return (
            f"Request(method={self.method!r}, target={self.target!r}, host={self.host!r}, "
            f"version={self.version!r}, headers={self.headers!r})"
        )

    def header(self, name: bytes) -> bytes | None:
        return header(self.headers, name)

    def params(self) -> dict[str, list[str]]:
        """Query parameters, parsed once on first use (routing by query is rare)."""
        if self._params is None:
            out: dict[str, list[str]] = {}
            for key, value in parse_qsl(self.query, keep_blank_values=True):
                out.setdefault(key, []).append(value)
            self._params = out
        return self._params


class Response:
    """One response head. The end-to-end fields are `headers` (pairs), or `lines` as the
    HTTP/1.1 server adapter reads them (see the module docstring); `length` is the value of
    Content-Length when the server sent one. Hop-by-hop fields are never here: the adapter
    that read them keeps them (RFC 9110 §7.6.1)."""

    __slots__ = ("extra", "headers", "length", "lines", "reason", "status")

    def __init__(
        self,
        status: int,
        headers: Headers | None = None,
        reason: bytes = b"",
        lines: list[bytes] | None = None,
        length: bytes | None = None,
    ) -> None:
        self.status = status
        self.headers = headers
        self.reason = reason
        self.lines = lines
        self.length = length
        self.extra: Headers | None = None  # fields the pipeline adds (request id, security)

    def fields(self) -> Headers:
        """The end-to-end fields as (name, value) pairs, without `extra`."""
        headers = self.headers
        if headers is None:
            headers = self.headers = [split_line(line) for line in self.lines or ()]
        return headers

    def set_fields(self, headers: Headers) -> None:
        """Replace the fields (a stage that edits them); the lines no longer hold."""
        self.headers = headers
        self.lines = None


def split_line(line: bytes) -> tuple[bytes, bytes]:
    """A `name: value` line as read by the HTTP/1.1 server adapter, as a pair."""
    name, _, value = line.partition(b": ")
    return name, value
