"""GCRA in Redis for `scope = "global"` rate limits: the script, its reply, and when to
trust Redis again (sans-IO: no socket, no clock read; l7.redislimit does the IO).

The script is `l4lb.gcra.KeyedGcra.check` for one key, run atomically inside Redis, so
every l4lb instance that shares the Redis shares the budget and gets the same answers a
local limit gives (allowed, remaining, retry-after, reset: the same 429 and `RateLimit`
fields). Two differences, both forced by sharing: the clock is Redis's (`TIME`: the
instances' monotonic clocks are unrelated), and times are whole microseconds (Lua numbers
are doubles: microseconds since 1970 are exact in them, and integer arithmetic needs no
epsilon). The key holds the TAT and expires when it is reached (`SET ... PX`): a key whose
TAT has passed holds no information, so Redis drops it by itself and memory follows the
keys in use (the local limiter's `max_keys` is not needed here).

A refused request counts nothing and writes nothing, as locally. One decision is one key
and one round trip (EVALSHA), so in a Redis Cluster each decision goes to the one shard
that holds its key; the key's hash tag is the counted value (client address or header), so
keys spread over the shards by client, and all of one client's keys for a route's limits
sit on one shard (docs/CONFIG.md).
"""

from __future__ import annotations

from typing import Any

from l4lb.gcra import Decision

__all__ = ["SCRIPT", "RedisHealth", "decision", "script_args"]

# KEYS[1]: the key. ARGV[1]: the interval (µs per request), ARGV[2]: the burst (requests).
# Reply: {allowed (1|0), remaining, retry_after µs, reset µs}, as `Decision`.
SCRIPT = """
local interval = tonumber(ARGV[1])
local window = interval * tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or 0) or 0
local start = now
if tat > now then start = tat end
local new = start + interval
if new - now > window then
  return {0, 0, new - now - window, start - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', new), 'PX', math.ceil((new - now) / 1000))
return {1, math.floor((window - (new - now)) / interval), 0, new - now}
"""


def script_args(rate: int, per: float, burst: int) -> tuple[int, int]:
    """(interval µs, burst) for a limit, as `KeyedGcra` reads them: the burst is at least
    1 and defaults to the rate."""
    return max(1, round(per * 1_000_000 / rate)), max(1, burst or rate)


def decision(reply: Any) -> Decision:
    """The script's reply as a `Decision`. Raises ValueError for anything else (a Redis that
    is not running this script: treated as an error by the caller)."""
    if not isinstance(reply, list | tuple) or len(reply) != 4:
        raise ValueError(f"unexpected reply {reply!r}")
    allowed, remaining, retry, reset = (int(x) for x in reply)
    return Decision(allowed == 1, remaining, retry / 1e6, reset / 1e6)


class RedisHealth:
    """Whether to send decisions to Redis, when to probe it again, and when to log.

    After a failure (error or timeout) Redis is "down": decisions get `on_error` at once,
    without waiting out a timeout each, and one probe at a time checks it, after a delay that
    doubles from `first` to `most` seconds. A log line at most every `log_every` seconds
    while down (the counters count every failure), and one when it is back."""

    __slots__ = ("delay", "first", "last_log", "log_every", "most", "suppressed", "up")

    def __init__(self, first: float = 0.1, most: float = 2.0, log_every: float = 10.0) -> None:
        self.up = True
        self.first, self.most, self.log_every = first, most, log_every
        self.delay = first
        self.last_log: float | None = None
        self.suppressed = 0  # failures not logged since the last line

    def failed(self, now: float) -> bool:
        """A decision or probe failed at `now`: True if this one should be logged (then
        `suppressed` says how many were not since the last line)."""
        was_up, self.up = self.up, False
        if was_up:
            self.delay = self.first
        if self.last_log is None or now - self.last_log >= self.log_every:
            self.last_log = now
            return True
        self.suppressed += 1
        return False

    def next_probe(self) -> float:
        """Seconds until the next probe (each call doubles the following one)."""
        delay = self.delay
        self.delay = min(self.most, self.delay * 2)
        return delay

    def recovered(self) -> bool:
        """A probe succeeded: True if Redis was down (log that it is back)."""
        was_down = not self.up
        self.up = True
        self.delay = self.first
        self.suppressed = 0
        self.last_log = None if was_down else self.last_log
        return was_down
