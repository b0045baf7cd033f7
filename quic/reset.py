"""Stateless reset (RFC 9000 §10.3): what to answer a datagram for no known connection.

A client whose server forgot its connection (a restart, a worker that died, an idle timeout
the client missed) would otherwise retransmit into silence until its own idle timeout. A
stateless reset ends it at once: a short-header-looking datagram ending in the 16-byte token
the server announced for that connection ID, which only the key holder can compute
(`quic.settings.reset_token`). Rules kept here, sans-IO (`now` is passed in):
- only in answer to a short header packet (long headers are handshakes, answered otherwise);
- never to a datagram smaller than the reset would be plus one byte, and always one byte
  smaller than what came (§10.3.3: two endpoints can then never loop), at most 64 bytes;
- at most `rate` per second per endpoint (a token bucket): a flood of garbage cannot make
  l4lb a reflector of more than that.
"""

from __future__ import annotations

import os

from quic.settings import CID_LENGTH, reset_token

__all__ = ["MIN_RESET", "ResetLimiter", "stateless_reset"]

MIN_RESET = 21  # RFC 9000 §10.3: 1 + 4 unpredictable bytes + 16 of token, at least
_MIN_TRIGGER = 1 + CID_LENGTH + 20 + 1  # a 1-RTT packet with our CID, a reset smaller still
_MAX_RESET = 64


class ResetLimiter:
    """A token bucket: `rate` resets a second, `burst` at once."""

    __slots__ = ("burst", "level", "rate", "stamp")

    def __init__(self, rate: float = 100.0, burst: float = 100.0) -> None:
        self.rate, self.burst = rate, burst
        self.level, self.stamp = burst, None

    def allow(self, now: float) -> bool:
        if self.stamp is not None:
            self.level = min(self.burst, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.level < 1.0:
            return False
        self.level -= 1.0
        return True


def stateless_reset(key: bytes, data: bytes) -> bytes | None:
    """The reset for datagram `data` (a short header packet for an unknown connection ID),
    or None when none may be sent (too small, not a short header)."""
    if len(data) < _MIN_TRIGGER or data[0] & 0xC0 != 0x40:
        return None
    size = min(len(data) - 1, _MAX_RESET)
    head = bytearray(os.urandom(size - 16))
    head[0] = 0x40 | (head[0] & 0x3F)  # looks like a short header packet (fixed bit set)
    return bytes(head) + reset_token(key, data[1 : 1 + CID_LENGTH])
