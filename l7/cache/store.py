"""The memory tier of the cache: stored responses by key, bounded in bytes, least recently
used out first, with the counters the admin API reports and the purges it asks for.

One per `[cache.NAME]` in each worker process (workers do not share it: a response is
stored once per worker that fetched it, and a purge through the admin API is sent to every
worker). Kept by the runtime's registry, so a reload keeps what is stored. With `disk_path`,
a `DiskStore` (l7/cache/disk.py) is the tier below, shared by the workers: every response
stored here is written there, and a key missing here is looked up there (and kept here).

The bound is on `bytes`: each entry counts its body, its header names and values, and a
fixed overhead for the objects around them (`Entry.size`, l7/cache/entry.py). `put` evicts
least recently used keys until the total is back under `max_bytes`, so `bytes <= max_bytes`
holds after every call (tests/unit/test_l7_cache_store.py drives it with a churn of objects).

Tags (Fastly's and Varnish's surrogate keys): the `tag_header` field of a stored response
(default `Surrogate-Key`), space-separated, is read at `put` and indexed, so `purge_tag`
finds its entries without a scan. A purge by prefix scans the keys (an operator's action,
not a request's; Varnish's bans scan too, lazily).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from l7.cache.entry import Entry
from l7.compress import ENCODINGS
from l7.model import Headers

__all__ = ["Counters", "Entry", "MemoryStore", "both_schemes", "copy_key"]

log = logging.getLogger("l4lb")

DEFAULT_TAG_HEADER = b"surrogate-key"
MAX_TAGS = 64  # tags kept per response (Fastly's limit is a 16 KiB header; this bounds the index)


def copy_key(key: str, encoding: str) -> str:
    """Where the compressed copy of `key`'s response is stored (never a valid URL)."""
    return f"{key} ~{encoding}"


class Counters:
    """What one route did with its cache (or, as `MemoryStore.total`, the whole cache):
    `hits` answered from a fresh stored response, `misses` sent to the server (nothing
    stored, or only a stale or non-matching response), `stale` answered from a stale stored
    response (stale-while-revalidate, stale-if-error), `stored` responses stored."""

    __slots__ = ("hits", "misses", "stale", "stored")

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0
        self.stale = 0
        self.stored = 0

    def report(self) -> dict[str, int]:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "stale": self.stale,
            "stored": self.stored,
        }


class MemoryStore:
    """Entries by primary key (method-independent: GET and HEAD share, RFC 9111 §4), each a
    short list of Vary variants."""

    def __init__(
        self, max_bytes: int, max_object: int, tag_header: bytes = DEFAULT_TAG_HEADER
    ) -> None:
        self.max_bytes = max_bytes
        self.max_object = max_object
        self.tag_header = tag_header
        self.entries: OrderedDict[str, list[Entry]] = OrderedDict()
        self.tags: dict[str, set[str]] = {}  # tag -> keys with a variant carrying it
        self.bytes = 0
        self.objects = 0  # stored responses (variants), not keys
        self.total = Counters()
        self.routes: dict[tuple[str, str], Counters] = {}  # (listener, route) -> counters
        self.evictions = 0
        self.purged = 0
        self.disk: Any = None  # l7.cache.disk.DiskStore when `disk_path` is set

    def attach_disk(self, path: str, max_bytes: int) -> None:
        """Use (or stop using) the disk tier at `path`; the same path keeps its store. A
        directory that cannot be made is logged, and the cache runs in memory only."""
        if not path:
            self.disk = None
        elif self.disk is None or self.disk.path != path:
            from l7.cache.disk import DiskStore

            try:
                self.disk = DiskStore(path, max_bytes)
            except OSError as exc:
                log.error("cache disk tier %s unusable, memory only: %s", path, exc)
                self.disk = None
        else:
            self.disk.max_bytes = max_bytes

    # -- counters ----------------------------------------------------------------------------

    def counters(self, listener: str, route: str) -> Counters:
        """The counters of one route (made on first use); pass them to `record`."""
        found = self.routes.get((listener, route))
        if found is None:
            found = self.routes[(listener, route)] = Counters()
        return found

    def record(self, route: Counters | None, outcome: str) -> None:
        """Count a lookup's `outcome` ("hits", "misses" or "stale") for the cache and the
        route."""
        setattr(self.total, outcome, getattr(self.total, outcome) + 1)
        if route is not None:
            setattr(route, outcome, getattr(route, outcome) + 1)

    # The cache's totals under their first names (`store.hits += 1` counts for no route).
    @property
    def hits(self) -> int:
        return self.total.hits

    @hits.setter
    def hits(self, value: int) -> None:
        self.total.hits = value

    @property
    def misses(self) -> int:
        return self.total.misses

    @misses.setter
    def misses(self, value: int) -> None:
        self.total.misses = value

    @property
    def stores(self) -> int:
        return self.total.stored

    def report(self) -> dict[str, Any]:
        """This cache's part of `/status` (l4lb/stats.py adds the name)."""
        disk = self.disk.report() if self.disk is not None else {}
        return {
            **disk,
            **self.total.report(),
            "evictions": self.evictions,
            "purged": self.purged,
            "objects": self.objects,
            "bytes": self.bytes,
            "max_bytes": self.max_bytes,
            "routes": [
                {"listener": listener, "route": route, **c.report()}
                for (listener, route), c in self.routes.items()
            ],
        }

    # -- lookups and stores ------------------------------------------------------------------

    def variants(self, key: str) -> list[Entry]:
        """The variants stored for `key`: from memory, else from the disk tier (then kept in
        memory too)."""
        found = self.entries.get(key)
        if found is None:
            if self.disk is None:
                return []
            found = [e for e in self.disk.load(key) if e.size <= self.max_bytes]
            if found:
                self._keep(key, found)
            return found
        self.entries.move_to_end(key)
        return found

    def _keep(self, key: str, entries: list[Entry]) -> None:
        """Hold `entries` (a key not in memory) in memory, evicting to stay under the bound."""
        self.entries[key] = entries
        for entry in entries:
            self.bytes += entry.size
            self.objects += 1
            for tag in entry.tags:
                self.tags.setdefault(tag, set()).add(key)
        self._evict()

    def _evict(self) -> None:
        while self.bytes > self.max_bytes and self.entries:
            evicted_key, evicted = self.entries.popitem(last=False)
            self._forget(evicted_key, evicted, ())
            self.evictions += len(evicted)

    def put(self, key: str, entry: Entry, route: Counters | None = None) -> bool:
        """Store `entry` (replacing the variant with the same Vary key); False if too big."""
        size = entry.size
        if len(entry.body) > self.max_object or size > self.max_bytes:
            return False
        entry.tags = self._tags_of(entry.headers)
        if key not in self.entries and self.disk is not None:
            self.variants(key)  # the variants other workers or earlier runs stored
        old = self.entries.get(key, [])
        kept = [e for e in old if e.vary != entry.vary]
        self._forget(key, [e for e in old if e.vary == entry.vary], kept)
        kept.append(entry)
        self.entries[key] = kept
        self.entries.move_to_end(key)
        self.bytes += size
        self.objects += 1
        for tag in entry.tags:
            self.tags.setdefault(tag, set()).add(key)
        self.total.stored += 1
        if route is not None:
            route.stored += 1
        if self.disk is not None:
            self.disk.save(key, kept)
        self._evict()
        return True

    def _tags_of(self, headers: Headers) -> tuple[str, ...]:
        name = self.tag_header
        if not name:
            return ()
        words: list[str] = []
        for n, v in headers:
            if n == name:
                words += v.decode("latin-1").split()
        return tuple(dict.fromkeys(words))[:MAX_TAGS]

    def _forget(self, key: str, gone: Iterable[Entry], kept: Iterable[Entry]) -> int:
        """Take `gone`, variants of `key` no longer stored, out of the byte count and the tag
        index (where `key` stays for a tag one of the `kept` variants still carries)."""
        kept_tags = {tag for e in kept for tag in e.tags}
        n = 0
        for entry in gone:
            n += 1
            self.bytes -= entry.size
            self.objects -= 1
            for tag in entry.tags:
                keys = self.tags.get(tag)
                if keys is not None and tag not in kept_tags:
                    keys.discard(key)
                    if not keys:
                        del self.tags[tag]
        return n

    # -- purges (the admin API's `POST /cache/NAME/purge`) -----------------------------------

    def purge(self, key: str) -> int:
        """Remove every variant stored under `key`; how many were removed."""
        old = self.entries.pop(key, None)
        n = self._forget(key, old, ()) if old is not None else 0
        if self.disk is not None:
            n = max(n, self.disk.remove(key))  # a response in memory and on disk counts once
        for encoding in ENCODINGS:  # its compressed copies (l7/cache/answer.py), uncounted
            copy = copy_key(key, encoding)
            kept = self.entries.pop(copy, None)
            if kept is not None:
                self._forget(copy, kept, ())
            if self.disk is not None:
                self.disk.remove(copy)
        self.purged += n
        return n

    def purge_prefix(self, prefix: str) -> int:
        """Remove every key that starts with `prefix` ("" is everything)."""
        n = 0
        for key in [k for k in self.entries if k.startswith(prefix)]:
            n += self._forget(key, self.entries.pop(key), ())
        if self.disk is not None:
            n = max(n, self.disk.purge_matching(prefix=prefix))
        self.purged += n
        return n

    def purge_tag(self, tag: str) -> int:
        """Remove every stored response whose tag header named `tag` (other variants of its
        key stay)."""
        n = 0
        for key in list(self.tags.get(tag, ())):
            variants = self.entries.get(key, [])
            kept = [e for e in variants if tag not in e.tags]
            if len(kept) == len(variants):
                continue
            if kept:
                self.entries[key] = kept
            else:
                del self.entries[key]
            n += self._forget(key, [e for e in variants if tag in e.tags], kept)
        if self.disk is not None:
            n = max(n, self.disk.purge_matching(tag=tag))
        self.purged += n
        return n


def both_schemes(key: str) -> list[str]:
    """A purge target as cache keys: `http://` and `https://` in front of one written without
    a scheme (`example.com/a`), the host lower-cased as the stage writes keys."""
    scheme, sep, rest = key.partition("://")
    if not sep:
        scheme, rest = "", key
    host, slash, path = rest.partition("/")
    rest = host.lower() + slash + path
    if scheme:
        return [f"{scheme.lower()}://{rest}"]
    return [f"http://{rest}", f"https://{rest}"]
