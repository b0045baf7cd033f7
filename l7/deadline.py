"""A connection's one deadline, on one lazy timer.

Setting a deadline later than the armed timer only stores it; the timer, when it fires
early, re-arms for what is left. Only a deadline that moves earlier re-arms at once. So a
connection whose deadline moves forward on every request (keep-alive, response, idle
timeouts) costs no timer per request: creating and cancelling libuv timers several times per
request was a measurable share of the HTTP hot path (bench/RESULTS.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["Deadline"]


class Deadline:
    """Calls `on_expiry()` once the time set with `set` has passed, unless cleared first."""

    __slots__ = ("_loop", "_on_expiry", "_timer", "_timer_at", "when")

    def __init__(self, loop: asyncio.AbstractEventLoop, on_expiry: Callable[[], None]) -> None:
        self._loop = loop
        self._on_expiry = on_expiry
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self.when = 0.0  # loop time of the deadline; 0: none

    def set(self, seconds: float) -> None:
        """The deadline is `seconds` from now (replacing any other)."""
        when = self._loop.time() + seconds
        self.when = when
        timer = self._timer
        if timer is None or self._timer_at > when:
            if timer is not None:
                timer.cancel()
            self._timer = self._loop.call_at(when, self._fire)
            self._timer_at = when

    def clear(self) -> None:
        """No deadline (the timer, if armed, finds nothing to do when it fires)."""
        self.when = 0.0

    def cancel(self) -> None:
        """No deadline and no timer: for a connection that is gone."""
        self.when = 0.0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        self._timer = None
        when = self.when
        if not when:
            return
        if self._loop.time() < when:  # the deadline moved on since: wait for it
            self._timer = self._loop.call_at(when, self._fire)
            self._timer_at = when
            return
        self.when = 0.0
        self._on_expiry()
