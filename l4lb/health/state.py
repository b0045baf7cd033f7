"""Health hysteresis: how many probe results in a row it takes to change a server's state.

One counter with `rise` and `fall`, as HAProxy keeps it (`check-t.h`): a server that is up goes
down after `fall` consecutive failures; one that is down comes back after `rise` consecutive
successes. A result that agrees with the current state resets the streak. The result of each
observation says whether the state changed, as Envoy's health checker reports
Unchanged / Changed / ChangePending.
"""

from __future__ import annotations

import enum

__all__ = ["Hysteresis", "Transition"]


class Transition(enum.Enum):
    UNCHANGED = "unchanged"
    PENDING = "pending"
    WENT_UP = "went_up"
    WENT_DOWN = "went_down"


class Hysteresis:
    """Rise/fall counter. Pure: no clock, no IO."""

    __slots__ = ("fall", "rise", "streak", "up")

    def __init__(self, rise: int = 2, fall: int = 3, up: bool = True) -> None:
        if rise < 1 or fall < 1:
            raise ValueError("rise and fall must be at least 1")
        self.rise = rise
        self.fall = fall
        self.up = up
        self.streak = 0

    def observe(self, ok: bool) -> Transition:
        """Record one probe result and say what it did to the state."""
        if ok == self.up:
            self.streak = 0
            return Transition.UNCHANGED
        self.streak += 1
        if self.streak < (self.fall if self.up else self.rise):
            return Transition.PENDING
        self.up = ok
        self.streak = 0
        return Transition.WENT_UP if ok else Transition.WENT_DOWN
