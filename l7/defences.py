"""Counting for the HTTP/2 defences that the h2 library leaves to its user (sans-IO).

Rapid reset (CVE-2023-44487): a client opens streams and resets them at once, so each costs
the proxy a request to a server and the client nothing; the limit on concurrent streams does
not hold because a reset stream no longer counts. Control-frame floods (SETTINGS, PING,
PRIORITY, WINDOW_UPDATE, empty DATA; CVE-2019-9512/9515/9518) make the proxy answer or work
for frames that carry no request. Both are counted per connection over a sliding window of
`window` seconds; over the limit, the adapter sends GOAWAY ENHANCE_YOUR_CALM and closes, as
nginx (its reset counter) and Envoy (`max_requests_per_io_cycle`, the premature-reset check)
do. The counts are kept as two buckets (this window and the last), weighted like a sliding
window, so a steady legitimate rate below the limit never trips it.
"""

from __future__ import annotations

__all__ = ["FloodGuard", "SlidingCount"]


class SlidingCount:
    """Events per `window` seconds, estimated from the current and the previous window
    (the sliding-window counter Cloudflare and Envoy's local rate limit describe)."""

    __slots__ = ("current", "limit", "previous", "start", "window")

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self.start = 0.0
        self.current = 0
        self.previous = 0

    def add(self, now: float) -> bool:
        """Count one event at `now`; True when the estimated rate is over the limit."""
        elapsed = now - self.start
        if elapsed >= self.window:
            self.previous = self.current if elapsed < 2 * self.window else 0
            self.current = 0
            self.start = now - (elapsed % self.window if elapsed < 2 * self.window else 0.0)
            elapsed = now - self.start
        self.current += 1
        weight = max(0.0, 1.0 - elapsed / self.window)
        return self.current + self.previous * weight > self.limit


class FloodGuard:
    """The two counters of one HTTP/2 connection. A limit of 0 turns that check off."""

    __slots__ = ("controls", "resets")

    def __init__(self, max_resets: int, max_control: int, window: float = 10.0) -> None:
        self.resets = SlidingCount(max_resets, window) if max_resets else None
        self.controls = SlidingCount(max_control, window) if max_control else None

    def reset(self, now: float) -> bool:
        """A stream reset by the client; True: too many."""
        return self.resets is not None and self.resets.add(now)

    def control(self, now: float) -> bool:
        """A frame that carries no request (SETTINGS, PING, PRIORITY, WINDOW_UPDATE, empty
        DATA); True: too many."""
        return self.controls is not None and self.controls.add(now)
