"""Active connections and health per server, once per instance (the shared segment).

Slots are allocated by name: (pool, server) hashes to a slot of the directory, found by
linear probing, so every worker, whatever config it has loaded so far, finds the same slot
for the same server, and a reload that keeps a server keeps its slot (and its counts). A slot
is in use while a worker's config has the server (its `uses` byte) or any worker still counts
connections on it (a removed server draining); only then may another name take it. The
directory never goes back to empty, so probe chains stay whole.

Active connections: each worker adds to its own row (`Server.cell`), lock-free; `total`
sums the rows. `least_conn`, `random_two` and `max_connections` read the total (`Server.load`);
the stats keep reporting each worker's own count (`Server.active`), which the supervisor sums.

Health: worker 0 probes (`checks`) and writes each result here; the others copy the states
in (`pull`, four times a second, and at once when they bind), as a restarted worker 0 does,
so nobody starts a known-down server as up. Passive ejection stays per worker: it reacts to a
worker's own failed connects.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from l4lb.shared.segment import HEALTH_BYTES, SERVER_SLOTS, Segment

if TYPE_CHECKING:
    from l4lb.pool import Pool

__all__ = ["ServerSlots"]

log = logging.getLogger("l4lb")

_UNKNOWN, _UP, _DOWN = 0, 1, 2


class ServerSlots:
    """One worker's view of the server table."""

    def __init__(self, segment: Segment) -> None:
        self.segment = segment
        self.keys = segment.array("srv_keys")
        self.health = segment.array("srv_health")
        self.uses = segment.array("srv_uses")
        self.active = segment.array("srv_active")
        self.row = segment.index * SERVER_SLOTS  # this worker's offset in `uses`, `active`
        self.rows = tuple(w * SERVER_SLOTS for w in range(segment.workers))
        self.checks = segment.index == 0  # worker 0 runs the health checks
        self.bound: set[int] = set()  # slots this worker's config uses

    def total(self, slot: int) -> int:
        """Connections open to the server of `slot`, over every worker."""
        active = self.active
        n = 0
        for row in self.rows:
            n += active[row + slot]
        return n

    def bind(self, pools: Iterable[Pool], now: float) -> None:
        """Give each server of the (re)loaded pools its slot (`shared`, `slot`, `cell`) and
        its published health; let go of the slots of servers no longer configured."""
        pools = list(pools)
        servers = [s for p in pools for s in p.servers]
        wanted = set()
        with self.segment.lock():
            for server in servers:
                slot = self._find(hash(("server", server.pool, server.name)))
                if slot < 0:
                    log.error(
                        "shared server table full; %s/%s counts per worker",
                        server.pool,
                        server.name,
                    )
                    server.shared = None
                    continue
                self.uses[self.row + slot] = 1
                wanted.add(slot)
                # `load` now sums every worker's count
                server.shared, server.slot, server.cell = self, slot, self.row + slot
            for slot in self.bound - wanted:
                self.uses[self.row + slot] = 0
        self.bound = wanted
        self.pull(pools, now)

    def _find(self, key: int) -> int:
        """The slot of `key`, claiming one if it has none (under the lock); -1: full."""
        key = key or 1
        keys = self.keys
        start = key % SERVER_SLOTS
        free = -1
        for i in range(SERVER_SLOTS):
            slot = (start + i) % SERVER_SLOTS
            found = keys[slot]
            if found == key:
                return slot
            if free < 0 and (found == 0 or self._idle(slot)):
                free = slot
            if found == 0:
                break
        if free >= 0:
            keys[free] = key
            base = free * HEALTH_BYTES
            self.health[base : base + HEALTH_BYTES] = memoryview(bytes(HEALTH_BYTES))
        return free

    def _idle(self, slot: int) -> bool:
        uses, active = self.uses, self.active
        return all(not uses[row + slot] and not active[row + slot] for row in self.rows)

    def publish(self, slot: int, up: bool, detail: str) -> None:
        """Worker 0: a probe's outcome for the server of `slot` (state after rise/fall)."""
        text = detail.encode()[: HEALTH_BYTES - 2]
        base = slot * HEALTH_BYTES
        health = self.health
        health[base + 1] = len(text)
        health[base + 2 : base + 2 + len(text)] = memoryview(text)
        health[base] = _UP if up else _DOWN  # last: the state byte says the rest is written

    def pull(self, pools: Iterable[Pool], now: float) -> None:
        """Take the published health of the servers of `pools` that have health checks (a
        pool whose checks a reload removed has its servers up, whatever was published)."""
        health = self.health
        for server in [s for p in pools if p.config.health is not None for s in p.servers]:
            if server.shared is not self:
                continue
            base = server.slot * HEALTH_BYTES
            state = health[base]
            if state == _UNKNOWN:
                continue
            size = health[base + 1]
            detail = bytes(health[base + 2 : base + 2 + size]).decode(errors="replace")
            server.take_health(state == _UP, now, detail)
