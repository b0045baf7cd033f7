"""Responses made from a stored one: the full response, 304 for a client's conditional, 206 or
416 for a Range, and the compressed variant kept beside the identity body.

`answer` is pure (the stored entry, the client's fields, `now` in; a response head and the
body bytes out). `encoded_variant` also reads and fills the store: a variant is compressed
once, stored under its own key (`KEY ~ENCODING`, never a valid URL, so it cannot collide)
and served from there on later hits, instead of compressing the same bytes on every hit.
"""

from __future__ import annotations

from typing import Final

from l7.cache.policy import current_age, not_modified, not_modified_fields
from l7.cache.ranges import UNSATISFIABLE, byte_range
from l7.cache.store import Entry, MemoryStore, copy_key
from l7.compress import CompressConfig, chosen_encoding, new_encoder
from l7.model import Headers, Request, Response

__all__ = ["answer", "encoded_variant"]

_NO_LENGTH: Final = frozenset({204, 304})


def answer(
    entry: Entry,
    request: Headers,
    method: str,
    now: float,
    status_field: bytes,
    variant: tuple[Headers, bytes] | None = None,
) -> tuple[Response, bytes]:
    """The head and body that answer `request` from `entry`, with Age (RFC 9111 §5.1) and
    `Cache-Status: status_field`. `variant` (fields and body of a compressed copy) replaces
    the identity body of a full 200."""
    age = str(int(current_age(entry.headers, entry.request_time, entry.response_time, now)))
    tail = [(b"age", age.encode()), (b"cache-status", status_field)]
    base = [(n, v) for n, v in entry.headers if n != b"age" and n != b"content-length"]
    body = entry.body
    if entry.status == 200 and not_modified(request, entry.headers):
        return Response(304, not_modified_fields(base) + tail), b""
    if method == "GET" and entry.status == 200:
        size = len(body)
        span = byte_range(request, entry.headers, size)
        if span == UNSATISFIABLE:
            fields = [(b"content-range", f"bytes */{size}".encode()), (b"content-length", b"0")]
            return Response(416, fields + tail, length=b"0"), b""
        if span is not None:
            first, last = span
            part = body[first : last + 1]
            fields = [
                (b"content-range", f"bytes {first}-{last}/{size}".encode()),
                (b"content-length", str(len(part)).encode()),
            ]
            return Response(206, base + fields + tail, length=fields[1][1]), part
        if variant is not None:
            base = [(n, v) for n, v in variant[0] if n != b"age" and n != b"content-length"]
            body = variant[1]
    if entry.status in _NO_LENGTH:
        return Response(entry.status, base + tail), b""
    length = str(len(body)).encode()
    return Response(entry.status, [*base, (b"content-length", length), *tail], length=length), body


def encoding_memo(config: CompressConfig, request: Request) -> tuple[object, ...]:
    """The key of `Entry.encodings`: what decides the encoding chosen for a stored response
    (the config's encodings, types and minimum length, the request's Accept-Encoding)."""
    return (config.encodings, config.types, config.min_length, request.header(b"accept-encoding"))


def encoded_variant(
    store: MemoryStore, key: str, entry: Entry, config: CompressConfig, request: Request
) -> tuple[Headers, bytes] | None:
    """The compressed copy of `entry` for this request's Accept-Encoding, made and stored on
    first use; None when the response is sent as it is (no acceptable encoding, a type that
    is not compressed, too short, a conditional or ranged answer...). The copy belongs to one
    stored response: a newer one (replaced, or updated by a 304) makes a new copy."""
    if entry.status != 200 or request.method != "GET" or request.header(b"range") is not None:
        return None
    memo = encoding_memo(config, request)
    encoding = entry.encodings.get(memo)
    probe = None
    if encoding is None:
        probe = Response(200, list(entry.headers), length=str(len(entry.body)).encode())
        encoding = entry.encodings[memo] = chosen_encoding(config, request, probe) or ""
    if not encoding:
        return None
    vkey = copy_key(key, encoding)
    for found in store.variants(vkey):
        if found.vary == entry.vary and found.response_time == entry.response_time:
            return found.headers, found.body
    if probe is None:  # (the fields the copy gets: Content-Encoding, Vary, weak ETag)
        probe = Response(200, list(entry.headers), length=str(len(entry.body)).encode())
        chosen_encoding(config, request, probe)
    encoder = new_encoder(config, encoding)  # (made only when the copy is made)
    body = encoder.compress(entry.body) + encoder.finish()
    fields = probe.fields()
    copy = Entry(
        200, fields, body, entry.vary, entry.request_time, entry.response_time, entry.lifetime
    )
    store.put(vkey, copy)
    return fields, body
