"""GCRA: the generic cell rate algorithm, a rate with a burst, per key (sans-IO).

GCRA keeps one number per key, the theoretical arrival time (TAT): when the next request
would be due if requests came exactly at the rate. A request at `now` conforms when
`TAT - now <= burst_window`, and then moves TAT on by one interval. It is a token bucket
measured in time instead of tokens, with one float of state and no refill loop; it is what
Redis-cell and Stripe's limiter use. Time is passed in (monotonic seconds); nothing here
reads a clock.

`KeyedGcra` bounds its table: keys whose TAT is in the past hold no information (a new
key starts the same way), so they are dropped when the table is full, least recently used
first, and if the oldest key is still live it is dropped anyway (it only forgets a limit early,
it never rejects a request it should not).
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

__all__ = ["Decision", "KeyedGcra", "Limiters", "conform"]


@dataclass(frozen=True, slots=True)
class Decision:
    """`allowed`; `remaining` requests that would conform now (after this one); `retry_after`
    seconds until the next would conform (0 when one would now); `reset` seconds until the
    budget is full again."""

    allowed: bool
    remaining: int
    retry_after: float
    reset: float


def conform(old: float, now: float, interval: float, burst: int) -> tuple[float, Decision]:
    """One decision for a key whose TAT is `old` (any value up to `now` for a key with no
    history): the key's new TAT (`old` again when refused) and the decision. The same
    arithmetic as `KeyedGcra.check`, for tables kept elsewhere (`l4lb.shared.limits`)."""
    window = interval * burst
    start = now if old < now else old
    new = start + interval
    if new - now > window + 1e-9:
        return old, Decision(False, 0, new - now - window, start - now)
    remaining = math.floor((window - (new - now)) / interval + 1e-9)
    return new, Decision(True, remaining, 0.0, new - now)


class KeyedGcra:
    """`rate` requests per `period` seconds, with `burst` requests allowed at once (at least
    1); `max_keys` bounds the table."""

    __slots__ = ("burst", "checked", "interval", "max_keys", "period", "rate", "rejected", "tat")

    def __init__(self, rate: int, period: float, burst: int = 0, max_keys: int = 100_000) -> None:
        if rate < 1 or period <= 0:
            raise ValueError("rate and period must be positive")
        self.rate, self.period = rate, period
        self.interval = period / rate
        self.burst = max(1, burst or rate)
        self.max_keys = max(1, max_keys)
        self.tat: dict[object, float] = {}  # insertion order = age
        self.checked = 0
        self.rejected = 0

    def check(self, key: object, now: float) -> Decision:
        """Count one request for `key` at `now`, or refuse it (then nothing is counted)."""
        self.checked += 1
        tat = self.tat
        interval = self.interval
        window = interval * self.burst  # how far ahead of now TAT may run
        old = tat.get(key)
        start = now if old is None or old < now else old
        new = start + interval
        if new - now > window + 1e-9:
            self.rejected += 1
            retry = new - now - window
            return Decision(False, 0, retry, start - now)
        if old is None and len(tat) >= self.max_keys:
            self._evict(now)
        tat.pop(key, None)
        tat[key] = new  # (re)inserted last: the table stays ordered by last use
        remaining = math.floor((window - (new - now)) / interval + 1e-9)
        return Decision(True, remaining, 0.0, new - now)

    def take(self, key: object, now: float) -> float:
        """`check` without its `Decision` (what a route's limit needs, per request): 0.0 when
        the request is counted, else the seconds until one would conform (> 0)."""
        self.checked += 1
        tat = self.tat
        interval = self.interval
        old = tat.get(key)
        new = (now if old is None or old < now else old) + interval
        over = new - now - interval * self.burst
        if over > 1e-9:
            self.rejected += 1
            return over
        if old is None:
            if len(tat) >= self.max_keys:
                self._evict(now)
        else:
            del tat[key]  # (re)inserted last: the table stays ordered by last use
        tat[key] = new
        return 0.0

    def peek(self, key: object, now: float) -> bool:
        """Whether a request for `key` would conform now, counting nothing."""
        old = self.tat.get(key)
        start = now if old is None or old < now else old
        return start + self.interval - now <= self.interval * self.burst + 1e-9

    def _evict(self, now: float) -> None:
        """Drop the least recently used keys, stale ones first in practice: the table is in
        last-use order, so its front holds the keys most likely past their TAT. O(1) per
        request amortised."""
        tat = self.tat
        while tat:
            key = next(iter(tat))
            if tat[key] > now and len(tat) < self.max_keys:
                break
            del tat[key]

    def __len__(self) -> int:
        return len(self.tat)


class Limiters(dict):
    """Limiters by key (a route's limit), kept across reloads by their owner. With
    `shared` (workers > 1: an `l4lb.shared.limits.SharedRates`), new limiters keep their
    state in the instance's table, so every worker spends one budget."""

    def __init__(self) -> None:
        super().__init__()
        self.shared: Any = None

    def make(self, key: Hashable, rate: int, per: float, burst: int, max_keys: int) -> KeyedGcra:
        """The limiter of `key`, made on first use."""
        gcra = self.get(key)
        if gcra is None:
            if self.shared is None:
                gcra = KeyedGcra(rate, per, burst, max_keys=max_keys)
            else:
                gcra = self.shared.gcra(key, rate, per, burst, max_keys)
            self[key] = gcra
        return gcra
