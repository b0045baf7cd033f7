"""JWKS URLs for the JWT stage: fetched off the request path, cached, refreshed, and refetched
when a token names a `kid` the cached set lacks (rate-limited), so a key rotation at the
identity provider is picked up without a reload.

`JwksSchedule` decides when to fetch (sans-IO, `now` passed in); `JwksSource` does it: the
blocking `urllib` GET (TLS with the system store, proxies from the environment, redirects,
as curl) runs in the loop's default thread pool with a socket timeout and an overall
deadline, and its result comes back to the loop as a callback. Requests use the keys cached
so far; one whose token names an unknown `kid` (or that finds no keys yet) waits, held
without a task (`wait`), for the fetch that this starts or that is under way, at most
`jwks_timeout`, and is checked again once; with fetches rate-limited it is answered at once
(401 unknown key id, or 503 without keys).
A failed fetch keeps the cached keys (Envoy does the same) and is retried after
`jwks_min_refetch`.

A source is shared by every route naming the same URL, and outlives reloads in the runtime's
`UpstreamRegistry` (`jwks`). It holds its stages weakly: once no engine uses it, its next
timer closes it and drops it from the registry.
"""

from __future__ import annotations

import http.client
import logging
import time
import urllib.error
import urllib.request
import weakref
from typing import TYPE_CHECKING, Any

from l7.jwtkeys import KeyError_, KeySet, keys_from_jwks

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable
    from concurrent.futures import Future

    from l7.jwtconf import JwtConfig

__all__ = ["MAX_JWKS_BYTES", "JwksLease", "JwksSchedule", "JwksSource", "fetch_url"]

log = logging.getLogger("l4lb")

MAX_JWKS_BYTES = 1 << 20  # a JWKS is a few kB; a bigger answer is not one
MAX_WAITERS = 1024  # requests held for one fetch; more are answered at once


class JwksSchedule:
    """When to fetch: at start, `refresh` seconds after a success, `min_refetch` after a
    failure, and on an unknown `kid` when the last fetch began at least `min_refetch` ago."""

    __slots__ = ("in_flight", "last_start", "min_refetch", "next_at", "refresh")

    def __init__(self, refresh: float, min_refetch: float) -> None:
        self.refresh = refresh
        self.min_refetch = min_refetch
        self.next_at = 0.0  # due at once
        self.last_start = float("-inf")
        self.in_flight = False

    def due(self, now: float) -> bool:
        return not self.in_flight and now >= self.next_at

    def may_refetch(self, now: float) -> bool:
        return not self.in_flight and now - self.last_start >= self.min_refetch

    def started(self, now: float) -> None:
        self.in_flight = True
        self.last_start = now

    def done(self, now: float, ok: bool) -> None:
        self.in_flight = False
        self.next_at = now + (self.refresh if ok else min(self.refresh, self.min_refetch))

    def next_deadline(self) -> float:
        return self.next_at


def fetch_url(url: str, timeout: float, limit: int = MAX_JWKS_BYTES) -> bytes:
    """GET `url` (blocking: run it in a thread). Raises OSError or ValueError."""
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(
        url, headers={"Accept": "application/jwk-set+json, application/json", "User-Agent": "l4lb"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if response.status != 200:
                raise ValueError(f"status {response.status}")
            parts, size = [], 0
            while True:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no whole answer in {timeout:g}s")
                data = response.read(65536)
                if not data:
                    break
                size += len(data)
                if size > limit:
                    raise ValueError(f"the answer is over {limit} bytes")
                parts.append(data)
            return b"".join(parts)
    except http.client.HTTPException as exc:
        raise ValueError(f"bad HTTP answer: {exc!r}") from None
    except urllib.error.HTTPError as exc:
        raise ValueError(f"status {exc.code}") from None


class JwksLease:
    """What a user of a `JwksSource` holds for as long as it uses it (`JwksSource.lease`).
    An object of its own because the users, `l7.jwtstage.JwtStage`s, are compiled classes,
    which take no weak reference."""

    __slots__ = ("__weakref__",)


class JwksSource:
    """The cached keys of one JWKS URL (`keys`, None until a fetch succeeds) and the fetches
    that keep them fresh. `start` fetches at once when nothing is under way; `wait` is for
    an unknown `kid`; `close` stops everything (what is in the thread finishes unseen)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        url: str,
        on_closed: Callable[[JwksSource], None] | None = None,
    ) -> None:
        self.loop = loop
        self.url = url
        self.keys: KeySet | None = None
        self.timeout = 5.0
        self.schedule = JwksSchedule(300.0, 10.0)
        # The `JwksLease` of each stage that uses this source, weakly: when the last goes (its
        # config reloaded away and its requests done), the next timer tick closes the source.
        self.users: weakref.WeakSet[JwksLease] = weakref.WeakSet()
        self.closed = False
        self.waiters: list[Callable[[], None]] = []  # requests waiting for a fetch's end
        self.fetches = 0
        self.failures = 0
        self._timer: asyncio.TimerHandle | None = None
        self._future: Future[bytes] | asyncio.Future[bytes] | None = None
        self._on_closed = on_closed

    def lease(self) -> JwksLease:
        """A new use of this source: it stays open while the lease lives."""
        lease = JwksLease()
        self.users.add(lease)
        return lease

    def configure(self, config: JwtConfig) -> None:
        """Take the timings of the provider just loaded (the latest load wins)."""
        self.timeout = config.jwks_timeout
        self.schedule.refresh = config.jwks_refresh
        self.schedule.min_refetch = config.jwks_min_refetch

    def start(self) -> None:
        if not self.closed and self._future is None and self.schedule.due(self.loop.time()):
            self._fetch()
        elif self._timer is None and self._future is None:
            self._arm()

    def wait(self, resume: Callable[[], None]) -> bool:
        """Call `resume` (soon, on the loop) when a fetch ends: the one under way, or one
        started now for an unknown `kid`. False (nothing to wait for) when fetches are
        rate-limited right now or `MAX_WAITERS` are waiting already."""
        if self.closed or len(self.waiters) >= MAX_WAITERS:
            return False
        if self._future is None:
            if not self.schedule.may_refetch(self.loop.time()):
                return False
            self._fetch()
        self.waiters.append(resume)
        return True

    def _wake(self) -> None:
        waiters, self.waiters = self.waiters, []
        for resume in waiters:
            self.loop.call_soon(resume)

    def _fetch(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.schedule.started(self.loop.time())
        self.fetches += 1
        future = self.loop.run_in_executor(None, fetch_url, self.url, self.timeout)
        self._future = future
        future.add_done_callback(self._fetched)

    def _fetched(self, future: Any) -> None:
        self._future = None
        if self.closed or future.cancelled():
            return
        ok = False
        try:
            keys = keys_from_jwks(future.result())
        except (OSError, ValueError) as exc:  # (KeyError_ is a ValueError)
            self.failures += 1
            kept = f"keeping {len(self.keys)} cached keys" if self.keys else "no keys yet"
            why = exc if isinstance(exc, KeyError_) else f"{type(exc).__name__}: {exc}"
            log.warning("jwks %s: fetch failed (%s); %s", self.url, why, kept)
        else:
            ok = True
            if self.keys is None or {k.kid for k in keys.keys} != {k.kid for k in self.keys.keys}:
                log.info("jwks %s: %d keys (%s)", self.url, len(keys), _kids(keys))
            self.keys = keys
        finally:  # (whatever happened, the next fetch is scheduled and the waiters go on)
            self.schedule.done(self.loop.time(), ok)
            self._arm()
            self._wake()

    def _arm(self) -> None:
        delay = max(0.0, self.schedule.next_deadline() - self.loop.time())
        self._timer = self.loop.call_later(delay, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if not self.users:
            self.close()
            return
        if self._future is None:
            self._fetch()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._future is not None:
            self._future.cancel()
            self._future = None
        self._wake()  # (they are answered: the exchange has waited once)
        if self._on_closed is not None:
            self._on_closed(self)

    def report(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "keys": len(self.keys) if self.keys is not None else 0,
            "fetches": self.fetches,
            "failures": self.failures,
        }


def _kids(keys: KeySet) -> str:
    return ", ".join(k.kid or "-" for k in keys.keys)
