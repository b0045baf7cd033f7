"""`random_two`: the power of two choices.

Sample two distinct candidates uniformly at random and keep the less loaded one. Mitzenmacher
showed that this second sample cuts the maximum load exponentially compared with one random
choice, while needing no global ordering of servers; it is nginx's `random two least_conn` and
Envoy's `LEAST_REQUEST` policy. Several l4lb workers that each see only their own connection
counts herd less onto the same "least loaded" server than with a strict `least_conn`.

Load is (active + 1) / weight_now, the same score as `least_conn` and Envoy's weighted
least-request (weight / (active + 1)), so a heavier server wins a comparison it would
otherwise tie, including when both are idle. On a tie the first of the two samples wins,
which is itself random.

The random source is injectable (`rng=`) so tests are deterministic.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from l4lb.balance.base import Balancer, ServerLike

__all__ = ["RandomTwo"]


class RandomTwo(Balancer):
    """Power of two random choices, weight-aware. O(1) per pick."""

    name = "random_two"
    needs = frozenset()

    def __init__(self, servers: Sequence[ServerLike], *, rng: random.Random | None = None) -> None:
        super().__init__(servers)
        self._rng = rng if rng is not None else random.Random()

    def pick(self, candidates: Sequence[ServerLike], key: bytes | None = None) -> ServerLike | None:
        n = len(candidates)
        if n == 0:
            return None
        if n == 1:
            return candidates[0]
        i, j = self._rng.sample(range(n), 2)
        a, b = candidates[i], candidates[j]
        if (b.load + 1) / b.weight_now < (a.load + 1) / a.weight_now:
            return b
        return a
