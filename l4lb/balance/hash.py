"""`hash`: consistent hashing of a key (the client address) onto the servers.

The same client goes to the same server for as long as that server is usable, and when a
server leaves the candidate list only the keys it held move; every other key stays put. That
is the property HAProxy's `hash-type consistent` and nginx's `hash ... consistent` (ketama)
provide, and the reason to prefer a ring over `hash % len(servers)`, which reshuffles almost
every key whenever the list changes length.

The ring is built once, from all servers of the pool, in `__init__`. Each server gets about
160 points ("virtual nodes") per unit of weight, the count ketama and nginx's `hash consistent`
use. As in ketama, a unit is the pool's mean weight, so the ring holds about 160 points per
server whatever scale the weights are written in (nginx multiplies the raw weight instead).
With 160 points, a server's share of the keys is typically within about a tenth of its
weight's share (the spread shrinks as 1/sqrt(points)). The weights are read once, at build
time; a pool that wants new weights to reshape the ring builds a new balancer (a reload does).

Points and keys are hashed with BLAKE2b from hashlib: stable across processes and runs
(Python's `hash()` is salted per process, which would send a client to different servers in
different workers) and well mixed even for inputs that differ in one byte, like adjacent IP
addresses (zlib.crc32, being linear, mixes such inputs less well). One 32-byte digest yields
four 64-bit points, as ketama takes four points from each MD5 digest.

`pick` bisects to the first point clockwise from hash(key) and walks on to the first point
owned by a candidate. Without a key (the caller has no client address) it falls back to
round robin over the candidates.
"""

from __future__ import annotations

import bisect
import hashlib
import struct
from collections.abc import Sequence
from typing import Final

from l4lb.balance.base import Balancer, ServerLike
from l4lb.balance.round_robin import RoundRobin

__all__ = ["POINTS_PER_WEIGHT", "Hash"]

POINTS_PER_WEIGHT: Final = 160
"""Ring points for a server of the pool's mean weight."""

_FOUR_POINTS: Final = struct.Struct(">4Q")


def _hash64(data: bytes) -> int:
    """Stable 64-bit hash of `data`."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def _points(name: str, count: int) -> list[int]:
    """`count` stable ring points for the server called `name`."""
    points: list[int] = []
    base = name.encode()
    block = 0
    while len(points) < count:
        digest = hashlib.blake2b(base + b"-" + str(block).encode(), digest_size=32).digest()
        points.extend(_FOUR_POINTS.unpack(digest))
        block += 1
    return points[:count]


class Hash(Balancer):
    """Consistent hashing on `key`. O(log ring) per pick, plus a walk past non-candidates."""

    name = "hash"
    needs = frozenset({"key"})

    def __init__(self, servers: Sequence[ServerLike]) -> None:
        super().__init__(servers)
        self._fallback = RoundRobin(servers)
        ring: list[tuple[int, int, str]] = []
        if self.servers:
            mean = sum(s.weight_now for s in self.servers) / len(self.servers)
            for order, server in enumerate(self.servers):
                count = max(1, round(POINTS_PER_WEIGHT * server.weight_now / mean))
                ring.extend((point, order, server.name) for point in _points(server.name, count))
        # Sorting by (point, config order) settles the rare collision the same way every time.
        ring.sort()
        self._points: list[int] = [point for point, _, _ in ring]
        self._owners: list[str] = [owner for _, _, owner in ring]

    def pick(self, candidates: Sequence[ServerLike], key: bytes | None = None) -> ServerLike | None:
        if not candidates:
            return None
        if key is None:
            return self._fallback.pick(candidates)
        by_name = {server.name: server for server in candidates}
        h = _hash64(key)
        points, owners = self._points, self._owners
        size = len(points)
        start = bisect.bisect_left(points, h)
        for step in range(size):
            server = by_name.get(owners[(start + step) % size])
            if server is not None:
                return server
        # No candidate is on the ring: the pool passed a server it did not construct us
        # with. Stay deterministic rather than fail the connection.
        return candidates[h % len(candidates)]
