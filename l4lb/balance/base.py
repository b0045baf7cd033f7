"""The interface every balancing algorithm implements, and what it may read from a server.

A balancer only decides; the pool owns the servers and does the filtering. The pool hands
`pick` the servers that are usable right now (up, not draining, under their connection
limit, not already tried for this connection) and the balancer chooses one of them. This is
HAProxy's split between the backend (which server states count) and the per-algorithm ops
table in `backend-t.h` (how to choose), and Envoy's load-balancing policy extension point.

An algorithm declares, in `needs`, the inputs it reads besides the candidates, so that config
validation can refuse a combination that cannot work (HAProxy refuses `balance uri` on a TCP
backend for the same reason). The only such input today is `"key"`: the bytes to hash.

Balancers are sans-IO: no sockets, no clock, no asyncio. They keep their own small state
(counters, current weights, a hash ring) and never mutate the servers they are given.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import ClassVar, Protocol

__all__ = ["Balancer", "ServerLike"]


class ServerLike(Protocol):
    """What a balancer reads from a server. Read-only: algorithms must not write to it."""

    @property
    def name(self) -> str:
        """Unique within the pool and stable across reloads; balancer state is keyed by it."""
        ...

    @property
    def weight_now(self) -> float:
        """Effective weight, > 0, already scaled down by slow start; may be fractional."""
        ...

    @property
    def load(self) -> int:
        """Connections currently open to this server, from every worker of the instance."""
        ...


class Balancer(abc.ABC):
    """Base of all algorithms. Subclasses set `name` and `needs` and implement `pick`.

    `servers` is every server of the pool, primaries and backups, in config order. It lets
    an algorithm build state that must not depend on which servers happen to be usable at a
    given moment (the hash ring). Algorithms that need nothing from it may ignore it.
    """

    name: ClassVar[str]
    needs: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, servers: Sequence[ServerLike]) -> None:
        if type(self) is Balancer:  # (compiled, ABCMeta's own refusal is not made)
            raise TypeError("Balancer is abstract: instantiate an algorithm")
        self.servers: tuple[ServerLike, ...] = tuple(servers)

    @abc.abstractmethod
    def pick(self, candidates: Sequence[ServerLike], key: bytes | None = None) -> ServerLike | None:
        """Choose one of `candidates`, or return None if and only if it is empty.

        `candidates` is already filtered by the pool to the servers usable now. `key` is the
        hashing input (the client address bytes) for algorithms whose `needs` contain
        `"key"`; others ignore it. The result is always an element of `candidates`.
        """

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} servers={len(self.servers)}>"
