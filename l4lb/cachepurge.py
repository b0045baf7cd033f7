"""Purging the HTTP cache from the admin API (`POST /cache/purge`, `POST /cache/NAME/purge`)
and `l4lb purge`: what a request asks for, checked, and how it applies to the stores.

Sans-IO and free of `l7` imports (DESIGN.md: `l4lb` does not import `l7` at import time):
the stores are `l7.cache.store.MemoryStore`s, called duck-typed. The body is one JSON object
with any of
    {"url": "https://example.com/a?b=1"}   exact keys (also "urls": [...])
    {"prefix": "https://example.com/img/"} keys starting so (also "prefixes": [...])
    {"tag": "product-42"}                  responses whose tag header named it ("tags": [...])
    {"all": true}                          everything
A URL or prefix without a scheme (`example.com/a`) purges both `http://` and `https://`.
That is Fastly's set (purge a URL, a surrogate key, or all) plus Varnish's ban by URL
prefix; as with them, a purge removes the stored responses at once and answers how many.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Fanout", "Purge", "PurgeError", "apply_purge", "configured_caches", "parse_purge"]

_LISTS = {"url": "urls", "prefix": "prefixes", "tag": "tags"}
_ALLOWED = 'a JSON object with "url", "prefix", "tag" (or "urls", "prefixes", "tags"), "all"'
MAX_ITEMS = 1000  # targets in one purge


class PurgeError(ValueError):
    """A purge request that cannot be applied; the message says why (answered with 400)."""


@dataclass(frozen=True, slots=True)
class Purge:
    """What to remove, from `cache` (None: every cache). Sent to workers as `asdict`."""

    cache: str | None = None
    urls: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    all: bool = False

    def json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Purge:
        return cls(
            data.get("cache"),
            tuple(data.get("urls", ())),
            tuple(data.get("prefixes", ())),
            tuple(data.get("tags", ())),
            bool(data.get("all", False)),
        )


def parse_purge(cache: str | None, body: bytes) -> Purge:
    """The purge a request body asks for. Raises PurgeError."""
    try:
        data = json.loads(body or b"null")
    except ValueError as exc:
        raise PurgeError(f"the body is not JSON ({exc}); expected {_ALLOWED}") from None
    if not isinstance(data, dict):
        raise PurgeError(f"expected {_ALLOWED}")
    unknown = sorted(set(data) - {*_LISTS, *_LISTS.values(), "all"})
    if unknown:
        raise PurgeError(f"unknown field {unknown[0]!r}; expected {_ALLOWED}")
    found: dict[str, list[str]] = {}
    for one, many in _LISTS.items():
        values: list[Any] = []
        if one in data:
            values.append(data[one])
        if many in data:
            if not isinstance(data[many], list):
                raise PurgeError(f"{many!r} must be a list of strings")
            values += data[many]
        for v in values:
            if not isinstance(v, str) or not v or (one == "tag" and any(c.isspace() for c in v)):
                what = "a tag without spaces" if one == "tag" else "a non-empty string"
                raise PurgeError(f"{one} {v!r}: expected {what}")
        found[many] = values
    everything = data.get("all", False)
    if not isinstance(everything, bool):
        raise PurgeError(f'"all" must be true or false, got {everything!r}')
    if sum(len(v) for v in found.values()) > MAX_ITEMS:
        raise PurgeError(f"at most {MAX_ITEMS} urls, prefixes and tags in one purge")
    if not everything and not any(found.values()):
        raise PurgeError(f"nothing to purge: expected {_ALLOWED}")
    return Purge(
        cache,
        tuple(found["urls"]),
        tuple(found["prefixes"]),
        tuple(found["tags"]),
        everything,
    )


def configured_caches(config: Any) -> list[str]:
    """Names of the `[cache.NAME]` tables some route of the running config uses."""
    names = (c.name for lc in getattr(config, "listeners", ()) for c in getattr(lc, "caches", ()))
    return sorted(set(names))


def _keys(target: str) -> Iterable[str]:
    from l7.cache.store import both_schemes  # only where a cache exists, so l7 is there

    return both_schemes(target)


def apply_purge(stores: Mapping[str, Any], purge: Purge) -> dict[str, int]:
    """Apply `purge` to `stores` (name -> store); stored responses removed, per cache."""
    out = {}
    for name, store in stores.items():
        if purge.cache is not None and name != purge.cache:
            continue
        n = store.purge_prefix("") if purge.all else 0
        n += sum(store.purge(k) for url in purge.urls for k in _keys(url))
        n += sum(store.purge_prefix(k) for prefix in purge.prefixes for k in _keys(prefix))
        n += sum(store.purge_tag(tag) for tag in purge.tags)
        out[name] = n
    return out


class Fanout:
    """One purge the supervisor sent to its workers: who was asked, who answered what.
    Each worker answers once (`{"reply": id, "caches": {...}}` on its control channel); a
    worker that exits has nothing left to purge (its memory store went with it)."""

    def __init__(self, purge: Purge, asked: Iterable[int], caches: Iterable[str]) -> None:
        self.purge = purge
        self.waiting = set(asked)
        self.answered = 0
        self.caches = {name: 0 for name in caches if purge.cache in (None, name)}

    def answer(self, index: int, reply: Mapping[str, Any]) -> None:
        if index not in self.waiting:
            return
        self.waiting.discard(index)
        self.answered += 1
        for name, n in reply.get("caches", {}).items():
            if isinstance(n, int):
                self.caches[name] = self.caches.get(name, 0) + n

    def gone(self, index: int) -> None:
        self.waiting.discard(index)

    @property
    def done(self) -> bool:
        return not self.waiting

    def result(self) -> dict[str, Any]:
        return {"caches": self.caches, "workers": self.answered, "unanswered": sorted(self.waiting)}
