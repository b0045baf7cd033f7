"""`least_conn`: send the connection to the server with the fewest connections per weight.

The score is (active + 1) / weight_now, lowest wins. Dividing by the weight makes a server of
weight 2 take twice the connections of one of weight 1, as HAProxy's `leastconn` (which keys
its tree by (inflight + 1) / eweight) and nginx's `least_conn` (which compares conns / weight)
both do. The + 1 counts the connection being placed, so the weight still matters when servers
are idle: an idle server of weight 3 is preferred to an idle one of weight 1.

Ties are broken by rotation, as both HAProxy and nginx do, so that an idle pool, or one whose
servers are equally loaded, still spreads new connections instead of piling them on the first
server in the list. The scan starts just after the position of the previous winner and keeps
the first strictly better score, so tied servers take turns.
"""

from __future__ import annotations

from collections.abc import Sequence

from l4lb.balance.base import Balancer, ServerLike

__all__ = ["LeastConn"]


class LeastConn(Balancer):
    """Weighted least connections with round-robin tie-breaking. O(candidates) per pick."""

    name = "least_conn"
    needs = frozenset()

    def __init__(self, servers: Sequence[ServerLike]) -> None:
        super().__init__(servers)
        self._start = 0

    def pick(self, candidates: Sequence[ServerLike], key: bytes | None = None) -> ServerLike | None:
        n = len(candidates)
        if n == 0:
            return None
        start = self._start % n
        best_index = start
        best_score = (candidates[start].load + 1) / candidates[start].weight_now
        for offset in range(1, n):
            i = (start + offset) % n
            server = candidates[i]
            score = (server.load + 1) / server.weight_now
            if score < best_score:
                best_index = i
                best_score = score
        self._start = best_index + 1
        return candidates[best_index]
