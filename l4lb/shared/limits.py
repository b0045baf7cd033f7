"""Per-client connection limits and route rate limits, once per instance (the shared segment).

Both are keyed tables of fixed size, 8-way set-associative: a key (`hash()` of the listener
and client address, or of the limit and the request's key, which agree across the workers:
`segment.py`) picks a bucket of 8 slots; a new key takes an empty slot, else a stale one
(its TAT in the past and, for clients, no connection counted), else the one with the oldest
TAT, which forgets a limit early and never refuses a request it should not (`KeyedGcra`
drops its least recently used key the same way). Every decision runs under the segment's
lock (about 1 us with the flock; two workers meet there for microseconds).

Connections per client are counted in per-worker columns, as servers' active counts are:
`release` touches only this worker's cell and takes no lock, and a dead worker's column is
zeroed by the supervisor, so its clients do not stay counted. A client slot holding any
count is never taken by another key.
"""

from __future__ import annotations

from typing import Any, Final

from l4lb.gcra import Decision, KeyedGcra, conform
from l4lb.shared.segment import CLIENT_SLOTS, RATE_SLOTS, Segment

__all__ = ["SharedClients", "SharedGcra", "SharedRates"]

_WAYS: Final = 8


class _Table:
    """Slots of (key, TAT) and, for clients, per-worker counts."""

    def __init__(self, segment: Segment, prefix: str, size: int, counts: bool) -> None:
        self.segment = segment
        # (Any: typeshed says a memoryview's items are int, and the compiled build would check
        # that of the TATs' float array)
        self.keys: Any = segment.array(prefix + "_keys")
        self.tat: Any = segment.array(prefix + "_tat")
        self.buckets = size // _WAYS
        self.counts: Any = segment.array("cli_counts") if counts else None
        self.rows = tuple(w * size for w in range(segment.workers)) if counts else ()
        self.row = segment.index * size if counts else 0
        self.claimed = 0  # keys this worker put in the table

    def held(self, slot: int) -> int:
        counts = self.counts
        if counts is None:
            return 0
        n = 0
        for row in self.rows:
            n += counts[row + slot]
        return n

    def slot(self, key: int, now: float) -> int:
        """The slot of `key`, taking one for it if it has none; -1 if every slot of its
        bucket holds counted connections. Call under the lock."""
        keys, tat = self.keys, self.tat
        base = (key % self.buckets) * _WAYS
        free, stale, oldest, oldest_tat = -1, -1, -1, 0.0
        for s in range(base, base + _WAYS):
            k = keys[s]
            if k == key:
                return s
            if k == 0:
                if free < 0:
                    free = s
            elif free < 0 and self.held(s) == 0:
                t = tat[s]
                if t <= now:
                    if stale < 0:
                        stale = s
                elif oldest < 0 or t < oldest_tat:
                    oldest, oldest_tat = s, t
        s = free if free >= 0 else stale if stale >= 0 else oldest
        if s >= 0:
            keys[s] = key
            tat[s] = now
            self.claimed += 1
        return s

    def find(self, key: int) -> int:
        """The slot of `key` or -1, without the lock (a slot with counts does not move)."""
        keys = self.keys
        base = (key % self.buckets) * _WAYS
        for s in range(base, base + _WAYS):
            if keys[s] == key:
                return s
        return -1


class SharedClients:
    """Connections and connection rate per client address, over every worker."""

    def __init__(self, segment: Segment) -> None:
        self.table = _Table(segment, "cli", CLIENT_SLOTS, counts=True)

    def admit(self, key: object, limit: int, rate: KeyedGcra | None, now: float) -> str | None:
        """As `ClientGate.admit` after its IP rules: None (and counted) or the reason."""
        table = self.table
        h = hash(key) or 1
        segment = table.segment
        segment.acquire()
        try:
            slot = table.slot(h, now)
            if slot < 0:
                return None  # the table is full of live clients: admitted, not counted
            if limit and table.held(slot) >= limit:
                return "client_max"
            if rate is not None:
                rate.checked += 1
                new, decision = conform(table.tat[slot], now, rate.interval, rate.burst)
                if not decision.allowed:
                    rate.rejected += 1
                    return "client_rate"
                table.tat[slot] = new
            assert table.counts is not None
            table.counts[table.row + slot] += 1
        finally:
            segment.release()
        return None

    def release(self, key: object) -> None:
        """An admitted connection of `key` ended (this worker's cell only: no lock)."""
        table = self.table
        slot = table.find(hash(key) or 1)
        counts = table.counts
        if slot >= 0 and counts is not None and counts[table.row + slot] > 0:
            counts[table.row + slot] -= 1

    def count(self, key: object) -> int:
        """Connections `key` holds over the instance (for tests and the admin view)."""
        slot = self.table.find(hash(key) or 1)
        return self.table.held(slot) if slot >= 0 else 0


class SharedRates:
    """The TATs of every route rate limit of the instance, one table."""

    def __init__(self, segment: Segment) -> None:
        self.table = _Table(segment, "rate", RATE_SLOTS, counts=False)

    def gcra(self, prefix: object, rate: int, per: float, burst: int, max_keys: int) -> SharedGcra:
        """A limiter whose state is this table's, for the limit named by `prefix` (a key that
        changes when the limit does, so a changed limit starts afresh)."""
        return SharedGcra(self, prefix, rate, per, burst, max_keys)


class SharedGcra(KeyedGcra):
    """A `KeyedGcra` whose TATs live in the shared table: one budget for the instance.
    `checked`, `rejected` and `len()` (keys this worker added) count this worker's part."""

    __slots__ = ("added", "prefix", "rates")

    def __init__(
        self, rates: SharedRates, prefix: object, rate: int, per: float, burst: int, max_keys: int
    ) -> None:
        super().__init__(rate, per, burst, max_keys=max_keys)
        self.rates = rates
        self.prefix = prefix
        self.added = 0

    def check(self, key: object, now: float) -> Decision:
        self.checked += 1
        table = self.rates.table
        h = hash((self.prefix, key)) or 1
        segment = table.segment
        segment.acquire()
        claimed = table.claimed
        try:
            slot = table.slot(h, now)
            new, decision = conform(table.tat[slot], now, self.interval, self.burst)
            table.tat[slot] = new
        finally:
            segment.release()
        self.added += table.claimed - claimed
        if not decision.allowed:
            self.rejected += 1
        return decision

    def take(self, key: object, now: float) -> float:
        decision = self.check(key, now)
        return 0.0 if decision.allowed else decision.retry_after

    def peek(self, key: object, now: float) -> bool:
        table = self.rates.table
        slot = table.find(hash((self.prefix, key)) or 1)
        old = table.tat[slot] if slot >= 0 else now
        return conform(old, now, self.interval, self.burst)[1].allowed

    def __len__(self) -> int:
        return self.added
