"""The cache stage: the exchange's calls into the cache (l7/exchange.py calls `cache_begin`
once routed, then the `CacheState` hooks on the response head, each body chunk, the end, an
error made by l4lb, and the exchange's end). Decisions are `l7.cache.policy`'s; this module
applies them to one exchange and never sees the wire, so every HTTP version gets the same.

What happens to a GET on a route with a cache:
- a fresh stored response answers it (`Cache-Status: l4lb; hit; ttl=N`), as 304 when the
  client's conditional matches, 206/416 for a Range (l7/cache/answer.py);
- a stale one inside `stale-while-revalidate` answers it too, and one background request
  (an exchange whose client is a `Sink`) refreshes it;
- otherwise the request goes to the server, with the stored validators when there is a
  stored response (§4.3.1). A 304 updates the stored fields and the client is answered from
  the store; a 5xx (or no server at all) inside `stale-if-error` is answered with the stale
  response; any other storable answer replaces it, streamed to the client and stored at its
  end;
- a miss while another request for the same key is being fetched waits for it (bounded by
  `collapse_timeout`) and is streamed the same response as it arrives (l7/cache/flight.py).

A successful POST, PUT, DELETE or PATCH drops the stored responses of its URI and of its
Location and Content-Location on the same authority (RFC 9111 §4.4).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final

from l7.cache.answer import answer
from l7.cache.flight import Flight, Sink, flights, refresh
from l7.cache.hit import short_hit
from l7.cache.policy import (
    cache_control,
    cache_status,
    current_age,
    fresh_enough,
    freshness_lifetime,
    not_modified,
    not_modified_fields,
    revalidation_request,
    same_validator,
    stale_allowed,
    storable,
    updated_fields,
    vary_key,
)
from l7.cache.serve import serve
from l7.cache.store import Counters, Entry, MemoryStore
from l7.model import Headers, Request, Response

if TYPE_CHECKING:
    from l7.exchange import Exchange

__all__ = ["CacheState", "Fill", "cache_begin", "cache_key", "serve"]

_UNSAFE: Final = frozenset({"POST", "PUT", "DELETE", "PATCH"})
_CONDITIONAL: Final = frozenset({b"if-none-match", b"if-modified-since"})


def cache_key(request: Request, authority: bytes) -> str:
    return f"{request.scheme}://{authority.decode('latin-1').lower()}{request.target}"


def select(store: MemoryStore, key: str, request: Headers) -> tuple[Entry | None, bool]:
    """The stored variant for these request fields (§4.1), and whether the URI has any."""
    variants = store.variants(key)
    for entry in variants:
        if entry.vary == vary_key(entry.headers, request):
            return entry, True
    return None, bool(variants)


class Fill:
    """A response on its way to the client, kept to be stored at its end (bounded by the
    store's `max_object`: a bigger body is passed through, not stored)."""

    __slots__ = ("chunks", "entry", "key", "route", "size", "store")

    def __init__(
        self, store: MemoryStore, key: str, entry: Entry, route: Counters | None = None
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

    def done(self) -> Entry:
        self.entry.body = b"".join(self.chunks)
        self.store.put(self.key, self.entry, self.route)
        return self.entry


class CacheState:
    """The cache stage's part of one exchange. `mode`: "fill" (a GET that may be stored),
    "pass" (sent on, not stored: HEAD, a waiter that gave up), "unsafe" (invalidates on
    success), "wait" (collapsed on another request's fetch), "done" (answered from the store).
    `entry` is the stored response being revalidated; `client` the client's own fields
    (the request sent upstream may carry the cache's validators instead); `tail` a stored
    body sent in place of the server's (`quiet`: the server's is dropped)."""

    __slots__ = (
        "client",
        "config",
        "counted",
        "entry",
        "fill",
        "flight",
        "fwd",
        "key",
        "mode",
        "quiet",
        "store",
        "tail",
        "timer",
    )

    def __init__(self, store: MemoryStore, config: Any, key: str, mode: str, client: Headers):
        self.store, self.config, self.key, self.mode = store, config, key, mode
        self.client = client
        self.counted: Counters | None = None  # the route's counters (`MemoryStore.record`)
        self.entry: Entry | None = None
        self.fill: Fill | None = None
        self.flight: Flight | None = None
        self.fwd = "miss"
        self.quiet = False
        self.tail: bytes | None = None
        self.timer: Any = None

    # -- hooks called by the exchange ----------------------------------------------------

    def on_head(self, ex: Exchange, response: Response) -> int:
        """The server's response head (after retries): store, revalidate or substitute.
        Returns the status the client gets."""
        status = response.status
        if self.mode == "unsafe":
            if 200 <= status < 400:
                invalidate(self.store, ex, response)
            return status
        now = time.time()
        entry, fields = self.entry, response.fields()
        flight = self.flight
        if entry is not None and status == 304 and self.mode == "fill":
            if same_validator(entry.headers, fields):
                headers = updated_fields(entry.headers, fields)
                lifetime = freshness_lifetime(headers, self.config.heuristic)
                entry = Entry(
                    entry.status, headers, entry.body, entry.vary, ex.started_wall(), now, lifetime
                )
                self.store.put(self.key, entry)
            else:
                self.store.purge(self.key)  # another representation: not this one's update
            age = current_age(entry.headers, entry.request_time, entry.response_time, now)
            field = cache_status(fwd=self.fwd, fwd_status=304, ttl=entry.lifetime - age)
            return self.substitute(ex, response, entry, field, now)
        if entry is not None and status >= 500 and self.mode == "fill":
            staleness = _staleness(entry, now)
            if stale_allowed(entry.headers, self.client, staleness, "stale-if-error"):
                self.store.record(self.counted, "stale")
                field = cache_status(fwd="stale", fwd_status=status, ttl=-staleness)
                return self.substitute(ex, response, entry, field, now)
        stored = False
        if self.mode == "fill":
            fill = begin_fill(
                self.store,
                self.key,
                ex.request,
                response,
                ex.started_wall(),
                now,
                self.config,
                self.counted,
            )
            self.fill = fill
            # ("stored" only when the length is known: a longer body is not stored)
            stored = fill is not None and response.length is not None
        field = cache_status(fwd=self.fwd, fwd_status=status if entry else 0, stored=stored)
        if self.fill is not None and status == 200 and not_modified(self.client, fields):
            # the client's own conditional matches what is being stored: 304, body stored only
            response.status = status = 304
            response.set_fields([*not_modified_fields(fields), (b"cache-status", field)])
            response.length = None
            self.quiet = True
        else:
            response.set_fields([*fields, (b"cache-status", field)])
        if flight is not None:
            if self.fill is not None:
                flight.start(self.fill.entry, self.fill.chunks)
            else:
                self.flight = None
                flight.fail()
        return status

    def substitute(
        self, ex: Exchange, response: Response, entry: Entry, field: bytes, now: float
    ) -> int:
        """Answer from `entry` instead of the server's response: its head now, its body at
        the end (the server's, if any, is dropped)."""
        made, body = answer(entry, self.client, ex.request.method, now, field)
        response.status = made.status
        response.set_fields(made.fields())
        response.length = made.length
        self.quiet = True
        self.tail = body
        self.mode = "done"
        flight, self.flight = self.flight, None
        if flight is not None:
            flight.resolve(entry)
        return made.status

    def on_body(self, data: bytes) -> bool:
        """A chunk of the server's body: kept for the store and the waiters; False when the
        client gets the stored body instead."""
        if not data:
            return True
        fill = self.fill
        if fill is not None and not fill.add(data):
            self.fill = None  # over max_object: passed through, not stored
            if self.flight is not None:
                self.flight.unjoinable()
        if self.flight is not None:
            self.flight.chunk(data)  # (streamed to the waiters, stored or not)
        return not self.quiet

    def on_complete(self, ex: Exchange) -> None:
        """The server's response ended: store it, end the waiters' copies, send the stored
        body that replaces the server's."""
        fill, self.fill = self.fill, None
        if fill is not None:
            fill.done()
        flight, self.flight = self.flight, None
        if flight is not None:
            flight.end()
        tail, self.tail = self.tail, None
        if tail and ex.framing != "none":
            ex.send_body(tail)

    def on_error(self, ex: Exchange) -> bool:
        """l4lb is about to answer with an error (no server, connect failure, timeout):
        True when a stale response inside stale-if-error was sent instead."""
        entry = self.entry
        if entry is None or self.mode != "fill":
            return False
        now = time.time()
        staleness = _staleness(entry, now)
        if not stale_allowed(entry.headers, self.client, staleness, "stale-if-error"):
            return False
        self.mode = "done"
        self.store.record(self.counted, "stale")
        flight, self.flight = self.flight, None
        if flight is not None:
            flight.resolve(entry)
        serve(ex, entry, cache_status(fwd="stale", ttl=-staleness, detail="unreachable"), now)
        return True

    def ended(self, ex: Exchange) -> None:
        """The exchange is over (finished or aborted): let go of what it holds."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        flight, self.flight = self.flight, None
        if flight is not None:
            if self.mode == "wait":
                flight.leave(ex)
            else:
                flight.fail()  # the fetch did not complete: the waiters go on their own


def _staleness(entry: Entry, now: float) -> float:
    return current_age(entry.headers, entry.request_time, entry.response_time, now) - entry.lifetime


def cache_begin(ex: Exchange, name: str) -> bool:
    """The cache lookup stage: True when the cache answered the request (or holds it until
    another request's response comes); False to go on to the server."""
    store, config = ex.engine.caches[name]
    request = ex.request
    method = request.method
    key = cache_key(request, ex.authority)
    if method in _UNSAFE:
        ex.cache = CacheState(store, config, key, "unsafe", request.headers)
        return False
    if method != "GET" and method != "HEAD":
        return False
    now = time.time()
    route = ex.route
    counted = store.counters(ex.engine.config.name, route.name if route else "")
    background = isinstance(ex.conn, Sink)
    variants = store.variants(key)
    if variants and not background and short_hit(ex, store, key, counted, variants, now):
        return True  # the usual hit (l7/cache/hit.py)
    state = ex.cache = CacheState(
        store, config, key, "fill" if method == "GET" else "pass", request.headers
    )
    state.counted = counted
    entry, known = select(store, key, request.headers)
    if entry is None:
        state.fwd = "vary-miss" if known else "uri-miss"
        if method == "GET" and request.header(b"range") is None:
            # The client's conditionals go no further (nginx does the same): the whole
            # response is fetched and stored, and the client is answered 304 if it matches.
            request.headers = [(n, v) for n, v in request.headers if n not in _CONDITIONAL]
    else:
        age = current_age(entry.headers, entry.request_time, entry.response_time, now)
        if not background and fresh_enough(request.headers, entry.lifetime, age):
            store.record(counted, "hits")
            state.mode = "done"
            serve(ex, entry, cache_status(hit=True, ttl=entry.lifetime - age), now)
            return True
        staleness = age - entry.lifetime
        asked = (
            "no-cache" in cache_control(request.headers) or request.header(b"pragma") == b"no-cache"
        )
        state.fwd = "stale" if staleness >= 0 else "request"
        if (
            not background
            and not asked
            and staleness >= 0
            and stale_allowed(entry.headers, request.headers, staleness, "stale-while-revalidate")
        ):
            store.record(counted, "stale")
            state.mode = "done"
            if key not in flights(store):
                refresh(ex, revalidation_request(request.headers, entry.headers))
            serve(ex, entry, cache_status(hit=True, ttl=-staleness), now)
            return True
        if method == "GET":
            state.entry = entry
            request.headers = revalidation_request(request.headers, entry.headers)
    store.record(counted, "misses")
    if method != "GET":
        return False
    if not background and (request.header(b"range") is not None or config.collapse_timeout <= 0):
        return False  # a ranged miss is passed on as it is (the server answers the range)
    if isinstance(ex.conn, Sink):
        state.flight = ex.conn.flight  # (registered by `refresh`)
        return False
    registry = flights(store)
    flight = registry.get(key)
    if flight is not None and flight.joinable:
        return flight.join(ex, state, config.collapse_timeout)
    state.flight = registry[key] = Flight(registry, key)
    return False


def begin_fill(
    store: MemoryStore,
    key: str,
    request: Request,
    response: Response,
    request_time: float,
    now: float,
    config: Any,
    route: Counters | None = None,
) -> Fill | None:
    """A Fill for this response if it may be stored, else None."""
    headers = list(response.fields())
    if request.method != "GET" or not storable(
        request.method,
        response.status,
        request.headers,
        headers,
        heuristic=config.heuristic,
        store_set_cookie=config.store_set_cookie,
    ):
        return None
    length = response.length
    if length is not None and length.isdigit() and int(length) > store.max_object:
        return None
    lifetime = freshness_lifetime(headers, config.heuristic)
    vary = vary_key(headers, request.headers)
    entry = Entry(response.status, headers, b"", vary, request_time, now, lifetime)
    return Fill(store, key, entry, route)


def invalidate(store: MemoryStore, ex: Exchange, response: Response) -> None:
    """RFC 9111 §4.4: drop the target URI, and Location and Content-Location when they are
    on the same authority (another one's could be a way to purge someone else's pages)."""
    request = ex.request
    base = f"{request.scheme}://{ex.authority.decode('latin-1').lower()}"
    store.purge(base + request.target)
    for name in (b"location", b"content-location"):
        for field, value in response.fields():
            if field != name:
                continue
            text = value.decode("latin-1").strip()
            if text.startswith("/") and not text.startswith("//"):
                store.purge(base + text)
            elif text.lower().startswith(base + "/"):
                store.purge(base + text[len(base) :])
