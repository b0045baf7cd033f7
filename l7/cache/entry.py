"""One stored response of the cache, in its own module because both tiers hold them: the
memory tier (l7/cache/store.py) and the disk tier below it (l7/cache/disk.py), which the
memory tier opens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from l7.model import Headers

__all__ = ["Entry"]

_OVERHEAD = 256  # bytes counted per entry beyond its head and body


@dataclass(slots=True)
class Entry:
    """One stored response: status, end-to-end fields, whole body, the Vary key it answers,
    and when it was requested and received (wall-clock seconds). `tags` are filled by `put`."""

    status: int
    headers: Headers
    body: bytes
    vary: tuple[tuple[bytes, bytes], ...]
    request_time: float
    response_time: float
    lifetime: float
    tags: tuple[str, ...] = ()
    # (what of the compress config decides, Accept-Encoding) -> the encoding its compressed
    # copy has ("" for none): l7/cache/answer.py decides once per kind of client, not per hit.
    encodings: dict[tuple, str] = field(default_factory=dict, compare=False, repr=False)
    # What its hits share (l7/cache/hit.py's HitMemo), made on the first one.
    hit: Any = field(default=None, compare=False, repr=False)

    @property
    def size(self) -> int:
        return len(self.body) + sum(len(n) + len(v) for n, v in self.headers) + _OVERHEAD
