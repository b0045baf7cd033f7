"""The memory tier of the cache: stored responses by key, bounded in bytes, least recently
used out first. One per `[cache.NAME]` in each worker process (workers do not share it: a
response is stored once per worker that fetched it, as nginx's shared zone does not do
across machines). Kept by the runtime's registry, so a reload keeps what is stored."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from l7.model import Headers

__all__ = ["Entry", "MemoryStore"]

_OVERHEAD = 256  # bytes counted per entry beyond its head and body


@dataclass(slots=True)
class Entry:
    """One stored response: status, end-to-end fields, whole body, the Vary key it answers,
    and when it was requested and received (wall-clock seconds)."""

    status: int
    headers: Headers
    body: bytes
    vary: tuple[tuple[bytes, bytes], ...]
    request_time: float
    response_time: float
    lifetime: float

    @property
    def size(self) -> int:
        return len(self.body) + sum(len(n) + len(v) for n, v in self.headers) + _OVERHEAD


class MemoryStore:
    """Entries by primary key (method-independent: GET and HEAD share, RFC 9111 §4), each a
    short list of Vary variants."""

    def __init__(self, max_bytes: int, max_object: int) -> None:
        self.max_bytes = max_bytes
        self.max_object = max_object
        self.entries: OrderedDict[str, list[Entry]] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.stores = 0

    def variants(self, key: str) -> list[Entry]:
        found = self.entries.get(key)
        if found is None:
            return []
        self.entries.move_to_end(key)
        return found

    def put(self, key: str, entry: Entry) -> bool:
        """Store `entry` (replacing the variant with the same Vary key); False if too big."""
        size = entry.size
        if len(entry.body) > self.max_object or size > self.max_bytes:
            return False
        old = self.entries.get(key, [])
        kept = [e for e in old if e.vary != entry.vary]
        self.bytes -= sum(e.size for e in old) - sum(e.size for e in kept)
        kept.append(entry)
        self.entries[key] = kept
        self.entries.move_to_end(key)
        self.bytes += size
        self.stores += 1
        while self.bytes > self.max_bytes and self.entries:
            _, evicted = self.entries.popitem(last=False)
            self.bytes -= sum(e.size for e in evicted)
        return True

    def purge(self, key: str) -> bool:
        old = self.entries.pop(key, None)
        if old is None:
            return False
        self.bytes -= sum(e.size for e in old)
        return True
