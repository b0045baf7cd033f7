"""`weighted_round_robin`: nginx's smooth weighted round robin.

Each server carries a `current_weight`. On every pick, each candidate's current weight grows
by its effective weight, the candidate with the largest current weight wins (the first one in
candidate order on a tie, as nginx's `ngx_http_upstream_get_peer` does), and the winner's
current weight drops by the sum of the candidates' weights. With integer weights and an
unchanged candidate list, every cycle of sum(weights) picks gives each server exactly its
weight in picks, and the picks are interleaved rather than bunched: weights 5, 1, 1 give
a a b a c a a, the example in the nginx changeset that introduced the algorithm (2012), where
the previous weighted rotation gave c b a a a a a. That spreading, which keeps a heavy server
from receiving a burst of new connections at once, is why nginx adopted it.

Like nginx, a server that is not a candidate (down, full, already tried) keeps its current
weight frozen until it returns. The state lives in a dict keyed by server name, so it is
unaffected by the order or length of the candidate list. Weights may be fractional (slow
start scales them down); the arithmetic is the same in floating point.
"""

from __future__ import annotations

from collections.abc import Sequence

from l4lb.balance.base import Balancer, ServerLike

__all__ = ["WeightedRoundRobin"]


class WeightedRoundRobin(Balancer):
    """Smooth weighted round robin. O(candidates) per pick."""

    name = "weighted_round_robin"
    needs = frozenset()

    def __init__(self, servers: Sequence[ServerLike]) -> None:
        super().__init__(servers)
        self._current: dict[str, float] = {s.name: 0.0 for s in self.servers}

    def pick(self, candidates: Sequence[ServerLike], key: bytes | None = None) -> ServerLike | None:
        current = self._current
        best: ServerLike | None = None
        best_weight = 0.0
        total = 0.0
        for server in candidates:
            weight = server.weight_now
            cw = current.get(server.name, 0.0) + weight
            current[server.name] = cw
            total += weight
            if best is None or cw > best_weight:
                best = server
                best_weight = cw
        if best is not None:
            current[best.name] = best_weight - total
        return best
