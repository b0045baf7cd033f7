"""The one request/response model every HTTP version is translated to (DESIGN.md, "L7").

Protocol adapters (HTTP/1.1 today, HTTP/2 and HTTP/3 later) build these from wire events and
write them back; pipeline stages (routing, headers, limits, cache, ...) read and change them
and never see the wire. Header names are lower-case `bytes` and values `bytes`, in order, with
repeats kept: that is what h11, h2 and aioquic hand out, and it keeps the hot path free of
decoding. Bodies are not part of the model: they stream separately.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl

__all__ = ["Headers", "Request", "Response"]

Headers = list[tuple[bytes, bytes]]


def header(headers: Headers, name: bytes) -> bytes | None:
    """The first value of `name` (lower-case), or None."""
    for key, value in headers:
        if key == name:
            return value
    return None


@dataclass(slots=True)
class Request:
    """One request head. `target` is the raw request-target (path and query) as received;
    `path` and `query` are split from it; `host` is the Host header or :authority, lower-case,
    without the port."""

    method: str
    target: str
    headers: Headers
    host: str = ""
    scheme: str = "http"
    version: str = "1.1"
    client: tuple[str, int] = ("", 0)
    path: str = field(init=False)
    query: str = field(init=False)
    _params: dict[str, list[str]] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        path, _, query = self.target.partition("?")
        self.path = path or "/"
        self.query = query

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


@dataclass(slots=True)
class Response:
    status: int
    headers: Headers
    reason: bytes = b""
