"""Response compression: which encoding a response gets, and the streaming encoders.

A stage of the protocol-neutral pipeline (DESIGN.md: "... cache store → compression →
response headers"): the exchange asks `start_encoder` once per response head and, when it
returns an encoder, passes every body chunk through it. The decision is sans-IO and reads
only the `l7.model` request and response, so HTTP/1.1 and HTTP/2 clients get the same.

The rules are nginx's `gzip` module's and RFC 9110's:

- negotiation from `Accept-Encoding` with q-values (RFC 9110 §12.5.3): q=0 refuses, `*`
  stands for any encoding not named, the highest q wins and the configured order (the
  server's preference, like Caddy's `encode` order) breaks ties;
- never for a response already encoded (`Content-Encoding`), a `Cache-Control:
  no-transform` one (RFC 9110 §7.7), a partial one (206 or `Content-Range`: the range
  would no longer describe the bytes sent), one without a body (HEAD, 204, 304, 1xx), one
  shorter than `min_length` (nginx `gzip_min_length`), or a type outside `types` (nginx
  `gzip_types`);
- `Vary: Accept-Encoding` on every response that could have been compressed, so a cache
  in front keeps the variants apart (nginx `gzip_vary on`);
- Content-Length is dropped (the adapter then frames with chunked or DATA frames), and a
  strong `ETag` becomes weak: the bytes changed, the meaning did not (RFC 9110 §8.8.1; nginx
  does the same since 1.7.3).

Each chunk is compressed and flushed as it arrives (a sync flush), so memory stays bounded
by one chunk and a slow stream reaches the client as it is made (server-sent events, long
JSON arrays), at the cost of a slightly worse ratio than whole-body compression.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from l7.model import Request, Response

__all__ = [
    "DEFAULT_LEVELS",
    "DEFAULT_TYPES",
    "ENCODINGS",
    "CompressConfig",
    "Decoder",
    "Encoder",
    "available",
    "choose",
    "chosen_encoding",
    "new_encoder",
    "parse_accept_encoding",
    "start_encoder",
]

log = logging.getLogger("l4lb")

#: The encodings l4lb can produce, in the default preference order.
ENCODINGS = ("zstd", "br", "gzip")
#: Levels: gzip 6 (nginx and zlib's default is 1 and 6), brotli 4 and zstd 3 (a good
#: ratio at a cost close to gzip's, the levels Caddy and Cloudflare use on the fly).
DEFAULT_LEVELS = {"gzip": 6, "br": 4, "zstd": 3}
LEVEL_RANGES = {"gzip": (1, 9), "br": (0, 11), "zstd": (1, 22)}
#: Media types compressed by default: text and the textual formats of nginx's and Caddy's
#: lists. A `type/*` entry matches every subtype.
DEFAULT_TYPES = (
    "text/*",
    "application/json",
    "application/javascript",
    "application/x-javascript",
    "application/ecmascript",
    "application/xml",
    "application/xhtml+xml",
    "application/rss+xml",
    "application/atom+xml",
    "application/ld+json",
    "application/manifest+json",
    "application/problem+json",
    "application/graphql-response+json",
    "application/wasm",
    "image/svg+xml",
    "image/x-icon",
    "font/ttf",
    "font/otf",
)
_NO_BODY = frozenset({204, 206, 304})


@dataclass(frozen=True, slots=True)
class CompressConfig:
    """`compress` of a listener or route. `encodings` in preference order (empty: off);
    `min_length` in bytes (a response of unknown length is compressed); `types` media types
    (`type/*` wildcards); `levels` per encoding."""

    encodings: tuple[str, ...] = ENCODINGS
    min_length: int = 256
    types: tuple[str, ...] = DEFAULT_TYPES
    levels: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_LEVELS))
    decompress: bool = False  # decode a server's gzip/br/zstd for a client that refuses it


def available(encoding: str) -> bool:
    """Whether the library behind `encoding` is installed (brotli, zstandard)."""
    try:
        if encoding == "br":
            import brotli  # noqa: F401
        elif encoding == "zstd":
            import zstandard  # noqa: F401
    except ImportError:
        return False
    return encoding in ENCODINGS


def parse_accept_encoding(value: bytes) -> dict[str, float]:
    """`Accept-Encoding` as {coding: q} (names lower-case). A bad q-value makes its member
    count as q=1 would be wrong, so it is skipped (RFC 9110 §12.4.2 gives q three decimals at
    most in 0..1)."""
    out: dict[str, float] = {}
    for member in value.decode("latin-1").split(","):
        coding, _, params = member.partition(";")
        coding = coding.strip().lower()
        if not coding:
            continue
        q = 1.0
        for param in params.split(";"):
            key, _, val = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(val.strip())
                except ValueError:
                    q = -1.0
                if not 0.0 <= q <= 1.0:
                    q = -1.0
        if q >= 0.0:
            out[coding] = max(q, out.get(coding, 0.0)) if coding in out else q
    return out


def choose(accept: bytes | None, offered: tuple[str, ...]) -> str | None:
    """The encoding to use among `offered` (server preference order) for a request with
    this `Accept-Encoding`, or None for identity. No header means any encoding would do
    (RFC 9110 §12.5.3), but like nginx and every browser-facing proxy l4lb then sends
    identity: old clients that omit it often cannot decode."""
    if not accept:
        return None
    prefs = parse_accept_encoding(accept)
    star = prefs.get("*", 0.0)
    best, best_q = None, 0.0
    for coding in offered:
        q = prefs.get(coding, prefs.get("x-gzip", star) if coding == "gzip" else star)
        if q > best_q:
            best, best_q = coding, q
    return best


def _type_ok(content_type: bytes | None, types: tuple[str, ...]) -> bool:
    if content_type is None:
        return False
    media = content_type.split(b";", 1)[0].strip().lower().decode("latin-1")
    major = media.split("/", 1)[0]
    return media in types or f"{major}/*" in types


class Encoder:
    """A streaming encoder: `compress(chunk)` returns the compressed bytes of the chunk
    (flushed, possibly empty), `finish()` the end of the stream."""

    __slots__ = ("_flush", "_obj", "encoding")

    def __init__(self, encoding: str, level: int) -> None:
        self.encoding = encoding
        self._obj: Any
        if encoding == "gzip":
            self._obj = zlib.compressobj(level, zlib.DEFLATED, 31)  # 31: gzip wrapper
            self._flush = zlib.Z_SYNC_FLUSH
        elif encoding == "br":
            import brotli

            self._obj = brotli.Compressor(quality=level)
            self._flush = -1
        elif encoding == "zstd":
            import zstandard

            self._obj = zstandard.ZstdCompressor(level=level).compressobj()
            self._flush = zstandard.COMPRESSOBJ_FLUSH_BLOCK
        else:
            raise ValueError(f"unknown encoding {encoding!r}")

    def compress(self, data: bytes) -> bytes:
        obj = self._obj
        if self._flush == -1:  # brotli
            return obj.process(data) + obj.flush()
        return obj.compress(data) + obj.flush(self._flush)

    def finish(self) -> bytes:
        obj = self._obj
        if self._flush == -1:
            return obj.finish()
        return obj.flush()


class Decoder:
    """The other way (`decompress = true`): a server's gzip, br or zstd body decoded chunk by
    chunk for a client that does not accept it, with `Encoder`'s surface. Memory per chunk
    is what the server's compression ratio makes of it: the server is yours, not the
    client, so the ratio is not capped."""

    __slots__ = ("_obj", "encoding", "kind")

    def __init__(self, coding: str) -> None:
        self.encoding = "identity"
        self.kind = coding
        self._obj: Any
        if coding == "gzip":
            self._obj = zlib.decompressobj(47)  # 47: a gzip or zlib header, detected
        elif coding == "br":
            import brotli

            self._obj = brotli.Decompressor()
        elif coding == "zstd":
            import zstandard

            self._obj = zstandard.ZstdDecompressor().decompressobj()
        else:
            raise ValueError(f"unknown encoding {coding!r}")

    def compress(self, data: bytes) -> bytes:  # (the name `Encoder` users call)
        obj = self._obj
        try:
            return obj.process(data) if self.kind == "br" else obj.decompress(data)
        except Exception as exc:  # zlib.error, brotli.error, zstandard.ZstdError
            log.warning("decompress: the server's %s body is not valid: %s", self.kind, exc)
            self._obj = _Nothing()
            return b""

    def finish(self) -> bytes:
        obj = self._obj
        return obj.flush() if self.kind == "gzip" else b""  # (_Nothing flushes too)


class _Nothing:
    """What a decoder becomes after a corrupt body: the rest is dropped (the client gets a
    truncated body and the log line says why), never an exception in the pipeline."""

    def process(self, data: bytes) -> bytes:
        return b""

    decompress = process

    def flush(self) -> bytes:
        return b""


def _decoder_for(config: CompressConfig, request: Request, response: Response) -> Decoder | None:
    """A Decoder when `decompress` is on and the response's one content-coding is one the
    client does not accept; the fields are rewritten as for a decoded body."""
    if not config.decompress or request.method == "HEAD" or response.status in _NO_BODY:
        return None
    fields = response.fields()
    codings = [v.strip().lower() for n, v in fields if n == b"content-encoding"]
    if len(codings) != 1 or codings[0].decode("latin-1") not in ENCODINGS:
        return None
    coding = codings[0].decode("latin-1")
    if any(
        n == b"content-range" or (n == b"cache-control" and b"no-transform" in v.lower())
        for n, v in fields
    ):
        return None
    if choose(request.header(b"accept-encoding"), (coding,)) is not None or not available(coding):
        return None
    edited = []
    for name, value in fields:
        if name == b"content-encoding" or name == b"content-length":
            continue
        if name == b"etag" and not value.startswith(b"W/"):
            value = b"W/" + value
        edited.append((name, value))
    if not any(name == b"vary" and _names_encoding(value) for name, value in fields):
        edited.append((b"vary", b"accept-encoding"))
    response.set_fields(edited)
    response.length = None
    return Decoder(coding)


def new_encoder(config: CompressConfig, encoding: str) -> Encoder:
    return Encoder(encoding, config.levels.get(encoding, DEFAULT_LEVELS[encoding]))


def start_encoder(config: CompressConfig, request: Request, response: Response) -> Encoder | None:
    """Decide for this response head; when it is compressed, rewrite its fields
    (Content-Encoding, Vary, no Content-Length, weak ETag) and return the encoder. A
    response that could have been compressed gets `Vary: Accept-Encoding` either way."""
    decoder = _decoder_for(config, request, response)
    if decoder is not None:
        return decoder  # type: ignore[return-value]  (the same two calls)
    encoding = chosen_encoding(config, request, response)
    return None if encoding is None else new_encoder(config, encoding)


def chosen_encoding(config: CompressConfig, request: Request, response: Response) -> str | None:
    """`start_encoder`'s decision and field edits, without making the encoder (the cache
    asks this on every hit of a stored compressed copy)."""
    if not config.encodings or request.method == "HEAD" or response.status < 200:
        return None
    if response.status in _NO_BODY:
        return None
    fields = response.fields()
    content_type = None
    for name, value in fields:
        if name == b"content-encoding" or name == b"content-range":
            if name == b"content-range" or value.strip().lower() != b"identity":
                return None
        elif name == b"cache-control":
            if b"no-transform" in value.lower():
                return None
        elif name == b"content-type":
            content_type = value
    if not _type_ok(content_type, config.types):
        return None
    length = response.length
    if length is not None and length.isdigit() and int(length) < config.min_length:
        return None
    encoding = choose(request.header(b"accept-encoding"), config.encodings)
    out = list(fields)
    if not any(name == b"vary" and _names_encoding(value) for name, value in fields):
        out.append((b"vary", b"accept-encoding"))
    if encoding is None:
        response.set_fields(out)
        return None
    edited = []
    for name, value in out:
        if name == b"content-length":
            continue
        if name == b"etag" and not value.startswith(b"W/"):
            value = b"W/" + value
        edited.append((name, value))
    edited.append((b"content-encoding", encoding.encode()))
    response.set_fields(edited)
    response.length = None
    return encoding


def _names_encoding(vary: bytes) -> bool:
    """A Vary value that already covers Accept-Encoding (or is `*`)."""
    members = {m.strip().lower() for m in vary.split(b",")}
    return b"accept-encoding" in members or b"*" in members
