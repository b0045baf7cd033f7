"""Request collapsing and background refresh for the cache stage.

A `Flight` is one fetch of a key in progress. Misses for the same key that come meanwhile
wait on it instead of going to the server (nginx's `proxy_cache_lock`, Varnish's waiting
list), each for at most `collapse_timeout` seconds; then it goes on its own, and its response
is not stored (as with nginx), so one slow fetch cannot make a herd of fillers. When the
fetch's head arrives and it will be stored, every waiter whose Vary key matches gets the head
and the body so far, then each chunk as it comes (streamed, not after the whole body): a
request that comes while the body is still arriving joins the same way. When the head says
the response will not be stored, or the fetch fails before its head, the waiters go to the
server themselves; one that was being streamed a body that then fails is cut, as the fetch's
own client is. A revalidation answered by 304 (or a stale answer under stale-if-error)
serves the waiters from the store.

Waiters' clients are written to without backpressure on the fetch (the fetch follows its own
client's pace); the body they can be sent is bounded by `max_object` while it is stored.

`refresh` makes the background request of stale-while-revalidate: an exchange like any
other, whose client is a `Sink` that drops what it is sent.

The flights of a store live beside it in a weak map: they belong to this stage, not to the
store, and go with it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from l4lb.attempt import Attempt
from l7.cache.policy import cache_status, not_modified, vary_key
from l7.cache.serve import serve
from l7.compress import start_encoder
from l7.forwarded import new_request_id
from l7.model import Request, Response

if TYPE_CHECKING:
    from l7.cache.store import Entry, MemoryStore
    from l7.exchange import Exchange

__all__ = ["Flight", "Sink", "flights", "refresh"]

_FLIGHTS: WeakKeyDictionary[Any, dict[str, Flight]] = WeakKeyDictionary()


def flights(store: MemoryStore) -> dict[str, Flight]:
    """The fetches in progress for `store`, by key."""
    found = _FLIGHTS.get(store)
    if found is None:
        found = _FLIGHTS[store] = {}
    return found


class Flight:
    """One fetch in progress and the requests waiting for it (see the module docstring)."""

    __slots__ = ("chunks", "entry", "followers", "joinable", "key", "registry", "waiters")

    def __init__(self, registry: dict[str, Flight], key: str) -> None:
        self.registry, self.key = registry, key
        self.waiters: list[Exchange] = []  # waiting for the head
        self.followers: list[Exchange] = []  # being streamed the body
        self.entry: Entry | None = None  # the response being stored, once its head came
        self.chunks: list[bytes] = []
        self.joinable = True

    def _close(self) -> None:
        if self.registry.get(self.key) is self:
            del self.registry[self.key]
        self.joinable = False

    def join(self, ex: Exchange, state: Any, timeout: float) -> bool:
        """`ex` waits for this fetch (True), or goes to the server (False: the body being
        streamed is of another variant)."""
        state.mode = "wait"
        state.flight = self
        if self.entry is not None:
            if not self._matches(ex):
                state.mode, state.flight = "fill", None
                return False
            self._follow(ex)
            return True
        self.waiters.append(ex)
        state.timer = ex.engine.registry.loop.call_later(timeout, self._give_up, ex)
        return True

    def _matches(self, ex: Exchange) -> bool:
        entry = self.entry
        return entry is not None and entry.vary == vary_key(entry.headers, ex.cache.client)  # type: ignore[union-attr]

    def _follow(self, ex: Exchange) -> None:
        """Send `ex` the head and the body so far; it then gets each chunk as it comes."""
        entry = self.entry
        assert entry is not None
        state = ex.cache
        assert state is not None
        if state.timer is not None:
            state.timer.cancel()
            state.timer = None
        field = cache_status(fwd=state.fwd, collapsed=True)
        if entry.status == 200 and not_modified(state.client, entry.headers):
            state.flight = None
            serve(ex, entry, field, time.time())  # (a 304 needs no body: answered at once)
            return
        response = Response(
            entry.status,
            [
                *(f for f in entry.headers if f[0] != b"age"),
                (b"age", b"0"),
                (b"cache-status", field),
            ],
        )
        for name, value in entry.headers:
            if name == b"content-length":
                response.length = value
        ex.status = entry.status
        ex.response_headers(response, [])
        route = ex.route
        compress = route.compress if route is not None else None
        if compress is None:
            compress = ex.engine.compress
        if compress is not None:
            ex.encoder = start_encoder(compress, ex.request, response)
        if ex.request.method == "HEAD" or entry.status in (204, 304):
            ex.framing = "none"
        ex.head_sent = True
        ex.conn.send_head(ex, response)
        self.followers.append(ex)
        if ex.framing != "none":
            for data in self.chunks:
                ex.send_body(data)

    # -- what the fetch reports ----------------------------------------------------------

    def start(self, entry: Entry, chunks: list[bytes]) -> None:
        """The fetch's head came and it is being stored: stream it to the waiters."""
        self.entry, self.chunks = entry, chunks
        waiters, self.waiters = self.waiters, []
        for ex in waiters:
            if ex.finished:
                continue
            if self._matches(ex):
                self._follow(ex)
            else:
                _go(ex, "fill")

    def chunk(self, data: bytes) -> None:

        for ex in self.followers:
            if not ex.finished and ex.framing != "none":
                ex.send_body(data)

    def end(self) -> None:
        self._close()
        followers, self.followers = self.followers, []
        for ex in followers:
            if not ex.finished:
                ex.cache.flight = None  # type: ignore[union-attr]
                ex.on_response_complete()

    def resolve(self, entry: Entry) -> None:
        """The fetch was answered from the store (a 304, or stale-if-error): so are the
        waiters."""

        self._close()
        waiters, self.waiters = self.waiters, []
        now = time.time()
        for ex in waiters:
            if ex.finished:
                continue
            state = ex.cache
            assert state is not None
            if state.timer is not None:
                state.timer.cancel()
                state.timer = None
            state.flight, state.mode = None, "done"
            serve(ex, entry, cache_status(fwd=state.fwd, collapsed=True), now)

    def fail(self) -> None:
        """The fetch will not be stored or did not complete: waiters go on their own, and
        those being streamed are cut."""
        self._close()
        waiters, self.waiters = self.waiters, []
        followers, self.followers = self.followers, []
        for ex in waiters:
            if not ex.finished:
                _go(ex, "pass")
        for ex in followers:
            if not ex.finished:
                ex.cache.flight = None  # type: ignore[union-attr]
                ex.conn.abort()
                ex.finish()

    def unjoinable(self) -> None:
        """The body went over max_object: it is not stored, so no later request can be
        given it from the start; those being streamed go on."""
        self._close()
        self.chunks = []

    def leave(self, ex: Exchange) -> None:
        if ex in self.waiters:
            self.waiters.remove(ex)
        if ex in self.followers:
            self.followers.remove(ex)

    def _give_up(self, ex: Exchange) -> None:
        """`collapse_timeout` passed before the head came: `ex` goes on its own."""
        if ex in self.waiters:
            self.waiters.remove(ex)
            ex.cache.timer = None  # type: ignore[union-attr]
            _go(ex, "pass")


def _go(ex: Exchange, mode: str) -> None:
    """A waiter goes to the server itself: "pass" (not stored, and with the client's own
    fields) or "fill"."""
    state = ex.cache
    assert state is not None
    if state.timer is not None:
        state.timer.cancel()
        state.timer = None
    state.flight = None
    state.mode = mode
    if mode == "pass" and state.entry is not None:
        ex.request.headers = state.client  # not the cache's validators: a 304 would be passed on
        state.entry = None
    engine, route = ex.engine, ex.route
    assert route is not None
    pool = ex.pool = engine.pools[route.action.pool]
    ex.attempt = Attempt(pool.config.retries, engine.budget(pool))
    engine.registry.loop.call_soon(_forward, ex)


def _forward(ex: Exchange) -> None:
    if not ex.finished:
        ex.forward()


class Sink:
    """The client side of a background refresh: takes everything, sends nothing."""

    draining = False
    touched = False

    def __init__(self, flight: Flight) -> None:
        self.forwarding: tuple[Any, bytes, bytes] = (None, b"", b"")
        self.flight = flight  # registered at once, so that one refresh runs, not one per hit

    def send_head(self, ex: Any, response: Response) -> None:
        if ex.framing != "none":
            ex.framing = "length" if response.length is not None else "stream"

    def send_interim(self, ex: Any, status: int) -> None: ...
    def send_data(self, ex: Any, data: bytes) -> None: ...
    def send_end(self, ex: Any) -> None: ...
    def send_simple(self, ex: Any, status: int, fields: Any, body: bytes) -> None: ...
    def write(self, data: bytes) -> None: ...
    def tunnel_eof(self, side: str) -> None: ...
    def end_tunnel(self) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def abort(self) -> None: ...
    def cork(self) -> None: ...
    def uncork(self) -> None: ...
    def tunnel(self, upstream: Any, pending: bytes) -> None: ...

    def exchange_done(self, ex: Any) -> None:
        self.flight.fail()  # (nothing left to do when it completed; else waiters go on)


def refresh(ex: Exchange, headers: list[tuple[bytes, bytes]]) -> None:
    """Start the one background request that refreshes a stale response served under
    stale-while-revalidate (RFC 5861 §3): the same GET with the cache's validators, from
    the next loop turn, whose answer goes to the store only. It is logged like any request."""
    req = ex.request
    copy = Request(
        "GET", req.target, headers, req.host, req.scheme, req.version, req.client, req.authority
    )
    state = ex.cache
    assert state is not None
    registry = flights(state.store)
    sink = Sink(Flight(registry, state.key))
    registry[state.key] = sink.flight
    background = type(ex)(
        sink, ex.engine, copy, False, "none", new_request_id(), False, ex.authority
    )
    ex.engine.registry.loop.call_soon(background.start)
