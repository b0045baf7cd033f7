"""Config of the compression and cache stages: `compress` on a listener or route, and the
`[cache.NAME]` tables that routes name with `cache = "NAME"` (docs/CONFIG.md).

Loaded by `l4lb.config.load` and `l7.routeconf` only for `http`/`https` listeners (DESIGN.md:
`l4lb` does not import `l7` at import time). Every problem is reported through the loader's
`error`, with the key path, so it carries the file and line like any other config error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from l4lb.config.tables import REQUIRED as _REQUIRED
from l4lb.config.tables import Fields
from l4lb.config.tables import TableLoader as _Loader
from l4lb.config.tables import strings as _strings
from l4lb.config.values import BadValue, boolean, integer, string
from l4lb.config.values import seconds_or_zero as _seconds_or_zero
from l4lb.config.values import size as _size
from l7.compress import DEFAULT_TYPES, ENCODINGS, LEVEL_RANGES, CompressConfig, available
from l7.routefields import _field_name

__all__ = ["CacheConfig", "parse_cache", "parse_compress"]

Path_ = list[str | int]


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """`[cache.NAME]`: a shared cache (RFC 9111) in memory, one per worker process.
    `max_bytes` bounds the stored heads and bodies together (least recently used out first);
    a response whose body is over `max_object` is passed through, not stored. `heuristic`
    (percent of the time since Last-Modified, RFC 9111 §4.2.2; nginx and Varnish use 10) is
    0, off, unless set. `store_set_cookie` lets responses with Set-Cookie be stored.
    `tag_header` names the response field whose words are the tags a purge by tag takes.
    `disk_path` (absolute once loaded) adds the disk tier, bounded by `disk_max_bytes`.
    `collapse_timeout`: seconds a miss waits for another request's fetch of the same key
    before going to the server itself (nginx `proxy_cache_lock_timeout`); 0: no collapsing."""

    name: str
    max_bytes: int = 64 << 20
    max_object: int = 1 << 20
    heuristic: int = 0
    store_set_cookie: bool = False
    tag_header: str = "surrogate-key"  # response field naming the tags `purge` takes
    disk_path: str = ""  # the disk tier's directory (l7/cache/disk.py), absolute; "" none
    disk_max_bytes: int = 1 << 30
    collapse_timeout: float = 5.0


_COMPRESS: Fields = {
    "encodings": (lambda v: v, ENCODINGS),
    "min_length": (_size, 256),
    "types": (lambda v: _types(v), DEFAULT_TYPES),
    "levels": (lambda v: v, None),
    "decompress": (boolean, False),
}
_CACHE: Fields = {
    "max_bytes": (_size, _REQUIRED),
    "max_object": (_size, 1 << 20),
    "heuristic": (integer(0, 100), 0),
    "store_set_cookie": (boolean, False),
    "tag_header": (_field_name, "surrogate-key"),
    "disk_path": (string, ""),
    "disk_max_bytes": (_size, 1 << 30),
    "collapse_timeout": (_seconds_or_zero, 5.0),
}


def _types(value: Any) -> tuple[str, ...]:
    out = []
    for item in _strings(value):
        if item.count("/") != 1 or " " in item or ";" in item:
            raise BadValue(
                f"{item!r} is not a media type", '"text/html", "application/json", "text/*"'
            )
        out.append(item.lower())
    return tuple(out)


def _encodings(loader: _Loader, value: Any, parts: Path_) -> tuple[str, ...] | None:
    allowed = 'a list of "zstd", "br", "gzip" in preference order'
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        loader.error(parts, f"expected a list of encodings, got {value!r}", allowed)
        return None
    out = []
    for i, item in enumerate(value):
        if item not in ENCODINGS:
            loader.error([*parts, i], f"unknown encoding {item!r}", allowed)
            return None
        if not available(item):
            package = {"br": "brotli", "zstd": "zstandard"}[item]
            loader.error(
                [*parts, i], f"{item} needs the {package} package", f"pip install {package}"
            )
            return None
        out.append(item)
    return tuple(dict.fromkeys(out))


def parse_compress(loader: _Loader, value: Any, parts: Path_) -> CompressConfig | None:
    """`compress = true | false | ["br", "gzip"] | {encodings, min_length, types, levels}`.
    `false` gives a config with no encodings (a route turning the listener's off); None
    means a reported error."""
    if isinstance(value, bool):
        return CompressConfig() if value else CompressConfig(encodings=())
    if isinstance(value, list):
        encodings = _encodings(loader, value, parts)
        return None if encodings is None else CompressConfig(encodings=encodings)
    raw = loader.table(value, parts, _COMPRESS)
    if raw is None:
        return None
    encodings = _encodings(loader, raw["encodings"], [*parts, "encodings"])
    if encodings is None:
        return None
    levels = dict(CompressConfig().levels)
    given = raw["levels"] or {}
    if not isinstance(given, dict):
        loader.error([*parts, "levels"], f"expected a table, got {given!r}", "{gzip = 6, br = 4}")
        return None
    for name, level in given.items():
        if name not in LEVEL_RANGES:
            loader.error(
                [*parts, "levels", name], f"unknown encoding {name!r}", ", ".join(ENCODINGS)
            )
            return None
        lo, hi = LEVEL_RANGES[name]
        try:
            levels[name] = integer(lo, hi)(level)
        except BadValue as exc:
            loader.error([*parts, "levels", name], exc.message, exc.allowed)
            return None
    return CompressConfig(encodings, raw["min_length"], raw["types"], levels, raw["decompress"])


def parse_cache(loader: _Loader, name: str, value: Any, parts: Path_) -> CacheConfig | None:
    """One `[cache.NAME]` table."""
    raw = loader.table(value, parts, _CACHE)
    if raw is None:
        return None
    if raw["max_object"] > raw["max_bytes"]:
        loader.error(
            [*parts, "max_object"],
            f"max_object {raw['max_object']} is over max_bytes {raw['max_bytes']}",
            "a size up to max_bytes",
        )
        return None
    if raw["disk_path"]:
        path = loader.path(raw["disk_path"])
        raw["disk_path"] = str(path)
        existing = next((p for p in (path, *path.parents) if p.exists()), None)
        if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            what = "not a directory" if existing is not None and not existing.is_dir() else None
            loader.error(
                [*parts, "disk_path"],
                f"{path}: {what or 'cannot be written by this user'}",
                "a directory l4lb may create and write (relative to the config file's folder)",
            )
            return None
        if raw["disk_max_bytes"] < raw["max_object"]:
            loader.error(
                [*parts, "disk_max_bytes"],
                f"disk_max_bytes {raw['disk_max_bytes']} is under max_object {raw['max_object']}",
                "a size of at least max_object",
            )
            return None
    return CacheConfig(name, **raw)
