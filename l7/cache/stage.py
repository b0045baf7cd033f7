"""The cache stage's glue between the exchange and the sans-IO policy: look a request up,
and collect a response being streamed to the client so it can be stored when it ends
(bounded by the store's `max_object`: a bigger body is passed through, not stored)."""

from __future__ import annotations

from l7.cache.policy import current_age, fresh_enough, freshness_lifetime, storable, vary_key
from l7.cache.store import Counters, Entry, MemoryStore
from l7.model import Request, Response

__all__ = ["Fill", "begin_fill", "lookup"]


def cache_key(request: Request, authority: bytes) -> str:
    return f"{request.scheme}://{authority.decode('latin-1').lower()}{request.target}"


def lookup(
    store: MemoryStore, key: str, request: Request, now: float, route: Counters | None = None
) -> Entry | None:
    """A stored response that may answer `request` now, or None (a miss, counted for the
    cache and the `route`'s counters)."""
    if request.method not in ("GET", "HEAD"):
        return None
    for entry in store.variants(key):
        if entry.vary != vary_key(entry.headers, request.headers):
            continue
        age = current_age(entry.headers, entry.request_time, entry.response_time, now)
        if fresh_enough(request.headers, entry.lifetime, age):
            store.record(route, "hits")
            return entry
    store.record(route, "misses")
    return None


def stored_response(entry: Entry, now: float) -> Response:
    """The head to send for a hit: the stored fields with Age (RFC 9111 §5.1) and X-Cache."""
    age = int(current_age(entry.headers, entry.request_time, entry.response_time, now))
    headers = [(n, v) for n, v in entry.headers if n != b"age"]
    headers += [(b"age", str(age).encode()), (b"x-cache", b"HIT")]
    return Response(entry.status, headers, length=str(len(entry.body)).encode())


class Fill:
    """A response on its way to the client, kept to be stored at its end."""

    __slots__ = ("chunks", "entry", "key", "route", "size", "store")

    def __init__(
        self, store: MemoryStore, key: str, entry: Entry | None, route: Counters | None = None
    ) -> None:
        self.store, self.key, self.entry, self.route = store, key, entry, route
        self.chunks: list[bytes] = []
        self.size = 0

    def add(self, data: bytes) -> bool:
        """Keep `data`; False once the body is over the limit (then the fill is dropped)."""
        self.size += len(data)
        if self.size > self.store.max_object:
            self.chunks = []
            return False
        self.chunks.append(data)
        return True

    def done(self) -> None:
        self.entry.body = b"".join(self.chunks)
        self.store.put(self.key, self.entry, self.route)


def begin_fill(
    store: MemoryStore,
    key: str,
    request: Request,
    response: Response,
    request_time: float,
    now: float,
    heuristic: int,
    store_set_cookie: bool,
    route: Counters | None = None,
) -> Fill | None:
    """A Fill for this response if it may be stored, else None."""
    headers = list(response.fields())
    if not storable(
        request.method,
        response.status,
        request.headers,
        headers,
        heuristic=heuristic,
        store_set_cookie=store_set_cookie,
    ):
        return None
    if request.method != "GET":
        return None  # a HEAD's response has no body to store
    length = response.length
    if length is not None and length.isdigit() and int(length) > store.max_object:
        return None
    lifetime = freshness_lifetime(headers, heuristic)
    vary = vary_key(headers, request.headers)
    entry = Entry(response.status, headers, b"", vary, request_time, now, lifetime)
    return Fill(store, key, entry, route)
