"""Balancing algorithms, registered by name.

Config names a pool's algorithm (`balance = "least_conn"`); the pool looks it up here with
`get`, checks the algorithm's `needs` against what the listener can supply (a `"key"` needs a
client address), and builds one instance per pool. One file per algorithm, as HAProxy keeps
one `lb_*.c` per algorithm behind a common ops table and Envoy one folder per policy.
"""

from __future__ import annotations

from l4lb.balance.base import Balancer, ServerLike
from l4lb.balance.hash import Hash
from l4lb.balance.least_conn import LeastConn
from l4lb.balance.random_two import RandomTwo
from l4lb.balance.round_robin import RoundRobin
from l4lb.balance.weighted_round_robin import WeightedRoundRobin

__all__ = ["ALGORITHMS", "NAMES", "Balancer", "ServerLike", "get"]

ALGORITHMS: dict[str, type[Balancer]] = {
    cls.name: cls for cls in (RoundRobin, WeightedRoundRobin, LeastConn, Hash, RandomTwo)
}

NAMES: tuple[str, ...] = tuple(sorted(ALGORITHMS))


def get(name: str) -> type[Balancer]:
    """Return the algorithm class registered as `name`.

    Raises KeyError, whose message lists the known names, if there is no such algorithm;
    config validation turns that into a ConfigError.
    """
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise KeyError(f"unknown balancing algorithm {name!r}; known: {', '.join(NAMES)}") from None
