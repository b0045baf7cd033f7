"""Per-server circuit breaker: stop sending requests to a server that keeps failing them.

Semantics follow Envoy's outlier detection (`consecutive_5xx`, `base_ejection_time`) and the
Hystrix / resilience4j breaker (closed -> open -> half-open -> closed):

- **closed**: every request is allowed. Each failure (a 5xx response or a timeout, as the
  caller judges it) adds to a streak of consecutive failures; a success resets the streak, as
  Envoy's `consecutive_5xx` counter does. When the streak reaches `failures` the breaker opens.
- **open**: no request is allowed for `cool_off` seconds (Envoy ejects the host for
  `base_ejection_time`; Hystrix waits `sleepWindowInMilliseconds`). Outcomes of requests that
  started before it opened are ignored: they neither extend nor shorten the cool-off.
- **half_open**: once `cool_off` has elapsed, at most `half_open_requests` trial requests may be
  in flight at once (resilience4j's `permittedNumberOfCallsInHalfOpenState`; Hystrix lets one).
  One failure re-opens the breaker for another `cool_off`; `half_open_requests` successes
  close it. A trial that ends with neither (the client went away) must give its slot back with
  `on_abandon`, or the breaker would wait for it for ever. The breaker does not tag requests,
  so an outcome reported in half-open counts as a trial's even if that request started while
  the breaker was still closed: a late failure re-opens (the conservative choice), a late
  success counts towards closing.

Transitions are lazy: the open -> half_open change happens in whichever of `allow`, `state`,
`on_success`, `on_failure` first sees `now >= opened_at + cool_off`, so no timer is needed;
`next_deadline()` tells an adapter that wants to log the change on time when to look.

Every transition is returned by the call that caused it (`on_success`, `on_failure`) and kept in
`last_transition` with a running `transitions` count, so logs and stats can show them even when
`allow` or `state` caused them. Pure: no clock, no IO; `now` is monotonic seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

__all__ = ["ADMITTED", "REFUSED", "TRIAL", "BreakerState", "CircuitBreaker", "Transition"]

BreakerState = Literal["closed", "open", "half_open"]

CLOSED: Final[BreakerState] = "closed"
OPEN: Final[BreakerState] = "open"
HALF_OPEN: Final[BreakerState] = "half_open"

# What `admit` answers.
REFUSED: Final = 0
ADMITTED: Final = 1
TRIAL: Final = 2


@dataclass(frozen=True, slots=True)
class Transition:
    """One change of state: from `old` to `new` at monotonic time `at`, and why."""

    old: BreakerState
    new: BreakerState
    at: float
    reason: str


class CircuitBreaker:
    """Closed / open / half-open breaker for one server. Not thread-safe (one per event loop)."""

    __slots__ = (
        "_in_flight",
        "_opened_at",
        "_state",
        "_streak",
        "_successes",
        "cool_off",
        "failures",
        "half_open_requests",
        "last_transition",
        "transitions",
    )

    def __init__(
        self, failures: int = 5, cool_off: float = 10.0, half_open_requests: int = 3
    ) -> None:
        if failures < 1 or half_open_requests < 1:
            raise ValueError("failures and half_open_requests must be at least 1")
        if cool_off < 0:
            raise ValueError("cool_off must not be negative")
        self.failures = failures
        self.cool_off = cool_off
        self.half_open_requests = half_open_requests
        self._state: BreakerState = CLOSED
        self._streak = 0  # consecutive failures while closed
        self._opened_at = 0.0
        self._in_flight = 0  # trial requests allowed in half-open and not yet reported
        self._successes = 0  # trial successes in the current half-open period
        self.last_transition: Transition | None = None
        self.transitions = 0

    # -- inputs ------------------------------------------------------------------------------

    def allow(self, now: float) -> bool:
        """May a request go to this server now? In half-open, a True takes a trial slot that
        the request's `on_success`, `on_failure` or `on_abandon` gives back."""
        return self.admit(now) != REFUSED

    def admit(self, now: float) -> int:
        """`allow`, saying how: `REFUSED` (0), `ADMITTED` (1, closed: no slot taken) or
        `TRIAL` (2, half-open: a trial slot taken). A caller that knows it holds a trial
        can give it back with `on_abandon` without taking someone else's."""
        state = self._advance(now)
        if state == CLOSED:
            return ADMITTED
        if state == OPEN or self._in_flight >= self.half_open_requests:
            return REFUSED
        self._in_flight += 1
        return TRIAL

    def on_success(self, now: float) -> Transition | None:
        """A request to this server succeeded. Returns the transition it caused, if any."""
        state = self._advance(now)
        if state == CLOSED:
            self._streak = 0
            return None
        if state == OPEN:
            return None  # a request from before the breaker opened: ignored
        self._release()
        self._successes += 1
        if self._successes >= self.half_open_requests:
            return self._move(CLOSED, now, f"{self._successes} trial requests succeeded")
        return None

    def on_failure(self, now: float) -> Transition | None:
        """A request to this server failed (a 5xx or a timeout). Returns the transition it
        caused, if any."""
        state = self._advance(now)
        if state == CLOSED:
            self._streak += 1
            if self._streak >= self.failures:
                return self._open(now, f"{self._streak} consecutive failures")
            return None
        if state == OPEN:
            return None  # a request from before the breaker opened: ignored
        self._release()
        return self._open(now, "a trial request failed")

    def on_abandon(self, now: float) -> None:
        """A request ended with no verdict (cancelled by the client): free its trial slot."""
        if self._advance(now) == HALF_OPEN:
            self._release()

    # -- outputs -----------------------------------------------------------------------------

    def state(self, now: float) -> BreakerState:
        """`"closed"`, `"open"` or `"half_open"` at `now`."""
        return self._advance(now)

    def next_deadline(self) -> float | None:
        """When an open breaker turns half-open (monotonic seconds), or None."""
        return self._opened_at + self.cool_off if self._state == OPEN else None

    def statistics(self) -> dict[str, object]:
        """A snapshot for the stats registry and the admin API (state as last observed)."""
        return {
            "state": self._state,
            "consecutive_failures": self._streak,
            "trials_in_flight": self._in_flight,
            "trial_successes": self._successes,
            "transitions": self.transitions,
        }

    # -- internals ---------------------------------------------------------------------------

    def _advance(self, now: float) -> BreakerState:
        state = self._state
        if state == OPEN and now >= self._opened_at + self.cool_off:
            self._in_flight = 0
            self._successes = 0
            self._move(HALF_OPEN, now, f"cool-off of {self.cool_off:g}s elapsed")
            return HALF_OPEN
        return state

    def _release(self) -> None:
        if self._in_flight:
            self._in_flight -= 1

    def _open(self, now: float, reason: str) -> Transition:
        self._opened_at = now
        self._streak = 0
        return self._move(OPEN, now, reason)

    def _move(self, new: BreakerState, now: float, reason: str) -> Transition:
        transition = Transition(self._state, new, now, reason)
        self._state = new
        self.last_transition = transition
        self.transitions += 1
        return transition
