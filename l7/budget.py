"""Retry policy: how many retries a pool may have in flight, and which failures may be retried.

`RetryBudget` is Envoy's `retry_budget` (cluster circuit breakers): concurrent retries are
limited to `percent` % of the active requests, but never below `min_retries_concurrent`, so a
quiet pool can still retry and a pool in trouble cannot multiply its own load (a fixed "retry 3
times" turns one slow server into 4x the traffic; a budget caps the extra load at `percent` %).
The limit is computed like Envoy's: `max(min_retries_concurrent, floor(active * percent / 100))`.

`is_retryable` says whether one failed attempt may be tried again on another server, from the
method's idempotency (RFC 9110 §9.2.2) and how far the attempt got (RFC 9110 §9.2.2: "a proxy
MUST NOT automatically retry non-idempotent requests"). It does not consult the budget: a
caller asks `is_retryable` first, then `try_acquire_retry`.

Pure: no clock, no IO; counters only. One budget per pool per worker process.
"""

from __future__ import annotations

from collections.abc import Container
from typing import Final, Literal

__all__ = ["IDEMPOTENT_METHODS", "Phase", "RetryBudget", "is_retryable"]

# RFC 9110 §9.2.2: the safe methods (GET, HEAD, OPTIONS, TRACE) plus PUT and DELETE. Method
# names are case-sensitive (RFC 9110 §9.1), so "get" is not GET.
IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})

Phase = Literal["connect", "reset", "status", "response"]
"""How far a failed attempt got:

- `"connect"`: no connection to the server (refused, connect timeout, TLS handshake failed):
  nothing of the request left l4lb.
- `"reset"`: the connection closed or timed out after (part of) the request was sent but before
  any byte of a response arrived: the server may have acted on it.
- `"status"`: a response head arrived with a status the caller may want to retry.
- `"response"`: the response had started reaching the client: never retryable.
"""


class RetryBudget:
    """Concurrent retry limit for one pool, as a share of its active requests.

    `on_request_start` / `on_request_end` bracket each client request routed to the pool (not
    each attempt); `try_acquire_retry` / `release_retry` bracket each retry attempt.
    """

    __slots__ = ("active_requests", "active_retries", "min_retries_concurrent", "percent")

    def __init__(self, percent: float = 20.0, min_retries_concurrent: int = 3) -> None:
        if not 0.0 <= percent <= 100.0:
            raise ValueError("percent must be between 0 and 100")
        if min_retries_concurrent < 0:
            raise ValueError("min_retries_concurrent must not be negative")
        self.percent = percent
        self.min_retries_concurrent = min_retries_concurrent
        self.active_requests = 0
        self.active_retries = 0

    def on_request_start(self) -> None:
        self.active_requests += 1

    def on_request_end(self) -> None:
        if self.active_requests:
            self.active_requests -= 1

    def limit(self) -> int:
        """How many retries may be in flight now."""
        share = int(self.active_requests * self.percent / 100.0)
        return max(self.min_retries_concurrent, share)

    def try_acquire_retry(self) -> bool:
        """Take a retry slot if the budget has one; the caller must `release_retry` it when
        the retry attempt ends, whatever its outcome."""
        if self.active_retries < self.limit():
            self.active_retries += 1
            return True
        return False

    def release_retry(self) -> None:
        if self.active_retries:
            self.active_retries -= 1

    def statistics(self) -> dict[str, int]:
        return {
            "active_requests": self.active_requests,
            "active_retries": self.active_retries,
            "retry_limit": self.limit(),
        }


def is_retryable(
    method: str,
    phase: Phase,
    status: int | None,
    retry_on_statuses: Container[int],
    body_replayable: bool = True,
) -> bool:
    """May this failed attempt be sent again to another server?

    - `"connect"`: always; the server never saw the request (Envoy's `connect-failure`, HAProxy's
      `retry-on conn-failure`), whatever the method.
    - `"reset"`: only for an idempotent method whose body l4lb can send again in full
      (`body_replayable`: no body, or every byte sent so far is still buffered). Envoy's `reset`
      and HAProxy's `empty-response`, limited as RFC 9110 §9.2.2 requires.
    - `"status"`: the same conditions, and `status` in `retry_on_statuses` (e.g. {502, 503, 504},
      Envoy's `retriable-status-codes`, HAProxy's `retry-on 503`...).
    - `"response"` (or anything else): never; the client has seen part of the answer.

    POST and PATCH are never retried after the connect phase: they are not idempotent.
    """
    if phase == "connect":
        return True
    if method not in IDEMPOTENT_METHODS or not body_replayable:
        return False
    if phase == "reset":
        return True
    if phase == "status":
        return status is not None and status in retry_on_statuses
    return False
