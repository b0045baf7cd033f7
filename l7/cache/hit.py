"""The short path of a cache hit: the common request (GET or HEAD with no Cache-Control,
Pragma, conditional or Range field) for a fresh stored 200, sent as stored or as its stored
compressed copy (l7/cache/answer.py's `encoded_variant`), answered from what the stored entry
keeps for its hits (`HitMemo`) instead of the general `answer`, which reads the stored fields
again on every hit.

Why: a hit skips the server's reads and writes, so it should cost less than the proxied path
(issue 12's target); the general path parsed the stored Date for Age, the request's and the
response's Cache-Control, the Vary list, and rebuilt the field list on each one. What does
not change between hits is computed once per stored entry (a replaced or updated entry is a
new `Entry`, with a new memo): the fields to send without Age and Cache-Status, the length,
the initial age (RFC 9111 §4.2.3, from Date and Age), the names Vary lists. Age and the
Cache-Status ttl change once a second: the two fields are kept until either value moves.

Everything else (a conditional, a Range, a request's Cache-Control, another status, a stale
entry, a compressed copy not made yet, identity under compression) returns False, and the
stage takes the general path, which makes the same answer; tests/e2e/test_cache_hit.py
holds the two equal, case by case.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Final

from l7.cache.answer import encoding_memo
from l7.cache.policy import cache_status, initial_age, vary_names, vary_values
from l7.cache.store import Counters, Entry, MemoryStore, copy_key
from l7.compress import CompressConfig
from l7.model import Headers, Request, Response

if TYPE_CHECKING:
    from l7.exchange import Exchange

__all__ = ["HitMemo", "hit_memo", "short_hit"]

#: Request fields that change what a hit answers (RFC 9111 §5.2.1, RFC 9110 §13, §14.2).
_ASKS: Final = frozenset(
    {
        b"cache-control",
        b"pragma",
        b"if-none-match",
        b"if-modified-since",
        b"if-match",
        b"if-unmodified-since",
        b"if-range",
        b"range",
    }
)


class HitMemo:
    """What a stored entry's hits share: `fields` (the stored ones without Age, then
    Content-Length), `length`, `initial` (the corrected initial age, seconds), `vary` (the
    field names its Vary lists), and the last Age and Cache-Status fields made (`tail`, for
    `age` and `ttl`)."""

    __slots__ = ("age", "fields", "initial", "length", "tail", "ttl", "vary")

    def __init__(self, entry: Entry) -> None:
        headers = entry.headers
        self.initial = initial_age(headers, entry.request_time, entry.response_time)
        self.length = str(len(entry.body)).encode()
        fields = [(n, v) for n, v in headers if n != b"age" and n != b"content-length"]
        fields.append((b"content-length", self.length))
        self.fields: Headers = fields
        self.vary = vary_names(headers)
        self.age = -1
        self.ttl = 0
        self.tail: Headers = []


def hit_memo(entry: Entry) -> HitMemo:
    """The entry's memo, made on its first hit."""
    memo = entry.hit
    if memo is None:
        memo = entry.hit = HitMemo(entry)
    return memo  # type: ignore[no-any-return]


def short_hit(
    ex: Exchange,
    store: MemoryStore,
    key: str,
    counted: Counters,
    variants: list[Entry],
    now: float,
) -> bool:
    """Answer `ex` (not a background refresh) from `variants` by the short path; False (and
    nothing done) when the general path must decide."""
    request = ex.request
    headers = request.headers
    for name, _ in headers:
        if name in _ASKS:
            return False
    for entry in variants:  # the first whose Vary key matches, as `stage.select`
        memo = hit_memo(entry)
        if entry.vary == (vary_values(memo.vary, headers) if memo.vary else ()):
            break
    else:
        return False
    lifetime = entry.lifetime
    age = memo.initial + (now - entry.response_time)  # (current_age, the same arithmetic)
    if entry.status != 200 or not lifetime - age > 0:
        return False
    sent, body = memo, entry.body
    route = ex.route
    compress = route.compress if route is not None else None
    if compress is None:
        compress = ex.engine.compress
    if compress is not None and compress.encodings:
        copy = _stored_copy(store, key, entry, compress, request)
        if copy is None:
            return False  # (identity through the encoder's decision, or a copy to make)
        sent, body = hit_memo(copy), copy.body
    seconds = int(age)
    ttl = math.floor(lifetime - age)
    if seconds != memo.age or ttl != memo.ttl:
        status = cache_status(hit=True, ttl=ttl)
        memo.tail = [(b"age", str(seconds).encode()), (b"cache-status", status)]
        memo.age, memo.ttl = seconds, ttl
    store.total.hits += 1
    counted.hits += 1
    response = Response(200, sent.fields + memo.tail, length=sent.length)
    ex.status = 200
    ex.response_headers(response, [])
    head = request.method == "HEAD"
    if head:
        ex.framing = "none"
    ex.head_sent = True
    conn = ex.conn
    conn.cork()  # (head and body in one write)
    conn.send_head(ex, response)
    if body and not head:
        ex.bytes_out += len(body)
        conn.send_data(ex, body)
    ex.on_response_complete()
    conn.uncork()
    return True


def _stored_copy(
    store: MemoryStore, key: str, entry: Entry, compress: CompressConfig, request: Request
) -> Entry | None:
    """The compressed copy of `entry` already stored for this request's Accept-Encoding
    (what `encoded_variant` would send), or None: a HEAD, no copy decided or made yet, or
    identity (then the encoder's own decision, made on the general path, adds its Vary)."""
    if request.method != "GET":
        return None
    encoding = entry.encodings.get(encoding_memo(compress, request))
    if not encoding:
        return None
    for found in store.variants(copy_key(key, encoding)):
        if found.vary == entry.vary and found.response_time == entry.response_time:
            return found
    return None
