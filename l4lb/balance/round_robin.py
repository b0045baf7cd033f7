"""`round_robin`: plain rotation over the usable servers, ignoring weights.

This is HAProxy's `static-rr` with all weights equal, or nginx's round robin with weight 1.
Use `weighted_round_robin` when servers differ in capacity.

State is one index. It is taken modulo the current number of candidates, so when the
candidate list grows or shrinks (a server goes down, a retry excludes the one that failed)
the rotation simply continues over the new list: every run of len(candidates) consecutive
picks over an unchanged list touches each candidate exactly once.
"""

from __future__ import annotations

from collections.abc import Sequence

from l4lb.balance.base import Balancer, ServerLike

__all__ = ["RoundRobin"]


class RoundRobin(Balancer):
    """Rotate through the candidates in order. O(1) per pick."""

    name = "round_robin"
    needs = frozenset()

    def __init__(self, servers: Sequence[ServerLike]) -> None:
        super().__init__(servers)
        self._next = 0

    def pick(self, candidates: Sequence[ServerLike], key: bytes | None = None) -> ServerLike | None:
        n = len(candidates)
        if n == 0:
            return None
        i = self._next % n
        self._next = i + 1
        return candidates[i]
