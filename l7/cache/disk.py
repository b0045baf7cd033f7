"""The disk tier of the cache: stored responses in files under `[cache.NAME] disk_path`,
shared by every worker and kept over restarts and reloads.

Layout: one file per primary key, named by the SHA-256 of the key, in a directory named by
its first two hex digits (`ab/abcdef...`), as nginx's `levels=2`. A file holds every Vary
variant of its key: a first line `l4lb-cache 1`, one JSON line (the key, then per variant its
status, fields, Vary key, times, lifetime, tags and body length), then the bodies one after
another. A file is written whole to a temporary name in the same directory and renamed over
the old one (`os.replace`, atomic on POSIX), so a reader, in this worker or another, sees the
old file or the new one, never a torn one; a worker killed mid-write leaves only a `.tmp`
file, removed by the next scan. The key is stored in the file and checked on read, so a hash
collision is a miss, never a wrong response. Nothing is fsynced: a crash may lose the last
writes, which a cache can afford.

Sharing between workers needs no coordination beyond the rename: any worker reads any file
(a miss in its memory tier looks here before going to a server), and a purge sent to every
worker removes the file once (the others find it gone).

The size bound is kept by scanning: each worker counts what it writes since its last scan,
and when that takes the directory's size (as of the scan) over `max_bytes`, or past a tenth
of it, it scans and removes the least recently used files (by mtime, which a read bumps)
until the directory is at 90% of `max_bytes`. So one worker never takes the directory more
than a tenth over the bound, and N workers writing at once at most N tenths. A purge by
prefix or tag reads every file's head (a scan, like a Varnish ban); by URL it is one unlink.

The calls are blocking file operations on the worker's loop, as nginx's without `aio
threads`: for files that are in the page cache they take microseconds; put `disk_path` on a
local disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterator
from typing import Any

from l7.cache.entry import Entry

__all__ = ["DiskStore"]

_MAGIC = b"l4lb-cache 1\n"
_LOW_WATER = 0.9  # a trim leaves the directory at this share of max_bytes
_SLACK = 0.1  # bytes written since a scan that trigger the next (share of max_bytes)
_STALE_TMP = 60.0  # seconds after which a .tmp file is a dead writer's


def _latin(b: bytes) -> str:
    return b.decode("latin-1")


def _bytes(s: str) -> bytes:
    return s.encode("latin-1")


class DiskStore:
    """Files under `path`, bounded to about `max_bytes` (see the module doc)."""

    def __init__(self, path: str, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.bytes = 0  # the directory's size at the last scan, plus what was written since
        self.files = 0
        self.written = 0  # since the last scan
        self.errors = 0  # files that could not be read or written
        self._serial = 0
        os.makedirs(path, exist_ok=True)
        self.scan()

    def _file(self, key: str) -> str:
        digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()
        return os.path.join(self.path, digest[:2], digest)

    # -- reading -----------------------------------------------------------------------------

    def load(self, key: str) -> list[Entry]:
        """The variants stored for `key` ([] if none, or if the file is unreadable)."""
        name = self._file(key)
        try:
            with open(name, "rb") as f:
                head = self._head(f)
                if head is None or head.get("key") != key:
                    return []
                entries = [self._entry(v, f.read(v["length"])) for v in head["variants"]]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError):
            self.errors += 1
            return []
        with contextlib.suppress(OSError):
            os.utime(name)  # recency for the trim
        return entries

    @staticmethod
    def _head(f: Any) -> dict[str, Any] | None:
        if f.readline() != _MAGIC:
            return None
        head = json.loads(f.readline())
        return head if isinstance(head, dict) else None

    @staticmethod
    def _entry(v: dict[str, Any], body: bytes) -> Entry:
        if len(body) != v["length"]:
            raise ValueError("short file")
        return Entry(
            int(v["status"]),
            [(_bytes(n), _bytes(x)) for n, x in v["headers"]],
            body,
            tuple((_bytes(n), _bytes(x)) for n, x in v["vary"]),
            float(v["request_time"]),
            float(v["response_time"]),
            float(v["lifetime"]),
            tuple(v["tags"]),
        )

    # -- writing -----------------------------------------------------------------------------

    def save(self, key: str, entries: list[Entry]) -> None:
        """Write `entries` as the variants of `key` (none: remove the file)."""
        if not entries:
            self.remove(key)
            return
        variants = [
            {
                "status": e.status,
                "headers": [[_latin(n), _latin(v)] for n, v in e.headers],
                "vary": [[_latin(n), _latin(v)] for n, v in e.vary],
                "request_time": e.request_time,
                "response_time": e.response_time,
                "lifetime": e.lifetime,
                "tags": list(e.tags),
                "length": len(e.body),
            }
            for e in entries
        ]
        head = json.dumps({"key": key, "variants": variants}, separators=(",", ":")).encode()
        name = self._file(key)
        self._serial += 1
        tmp = f"{name}.{os.getpid()}.{self._serial}.tmp"
        try:
            os.makedirs(os.path.dirname(name), exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(_MAGIC + head + b"\n")
                for e in entries:
                    f.write(e.body)
                size = f.tell()
            try:
                replaced = os.stat(name).st_size
            except FileNotFoundError:
                replaced = -1
            os.replace(tmp, name)
        except OSError:
            self.errors += 1
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            return
        self.bytes += size - max(replaced, 0)
        self.files += replaced < 0
        self.written += size
        if self.bytes > self.max_bytes or self.written > self.max_bytes * _SLACK:
            self.scan()

    def remove(self, key: str) -> int:
        """Remove the file of `key`; how many variants it held (0: there was none)."""
        name = self._file(key)
        try:
            with open(name, "rb") as f:
                head = self._head(f)
                size = os.fstat(f.fileno()).st_size
            os.unlink(name)
        except (OSError, ValueError):
            return 0
        self.bytes, self.files = max(self.bytes - size, 0), max(self.files - 1, 0)
        if head is None or head.get("key") != key:
            return 0
        return len(head.get("variants", ()))

    # -- scans: the size bound and purges by prefix or tag ------------------------------------

    def _files(self) -> Iterator[os.DirEntry[str]]:
        with contextlib.suppress(OSError), os.scandir(self.path) as top:
            for sub in top:
                if sub.is_dir(follow_symlinks=False) and len(sub.name) == 2:
                    with contextlib.suppress(OSError), os.scandir(sub.path) as files:
                        yield from files

    def scan(self) -> None:
        """Measure the directory, remove dead writers' temporaries, and trim it to the low
        watermark when it is over `max_bytes`."""
        found: list[tuple[float, int, str]] = []
        now = time.time()
        for f in self._files():
            try:
                st = f.stat(follow_symlinks=False)
            except OSError:
                continue
            if f.name.endswith(".tmp"):
                if now - st.st_mtime > _STALE_TMP:
                    with contextlib.suppress(OSError):
                        os.unlink(f.path)
                continue
            found.append((st.st_mtime, st.st_size, f.path))
        total = sum(size for _, size, _ in found)
        if total > self.max_bytes:
            found.sort()
            goal = self.max_bytes * _LOW_WATER
            while found and total > goal:
                _, size, path = found.pop(0)
                with contextlib.suppress(OSError):
                    os.unlink(path)
                total -= size
        self.bytes, self.files, self.written = total, len(found), 0

    def purge_matching(self, prefix: str | None = None, tag: str | None = None) -> int:
        """Remove the variants whose key starts with `prefix`, or that carry `tag`, reading
        every file's head; how many were removed."""
        removed = 0
        for f in self._files():
            if f.name.endswith(".tmp"):
                continue
            try:
                with open(f.path, "rb") as fh:
                    head = self._head(fh)
                    if head is None:
                        continue
                    key = head["key"]
                    if prefix is not None:
                        if key.startswith(prefix):
                            size = os.fstat(fh.fileno()).st_size
                            os.unlink(f.path)
                            self.bytes = max(self.bytes - size, 0)
                            self.files = max(self.files - 1, 0)
                            removed += len(head["variants"])
                        continue
                    hit = [tag in v["tags"] for v in head["variants"]]
                    if not any(hit):
                        continue
                    entries = [self._entry(v, fh.read(v["length"])) for v in head["variants"]]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            self.save(key, [e for e, h in zip(entries, hit, strict=True) if not h])
            removed += sum(hit)
        return removed

    def report(self) -> dict[str, int]:
        return {
            "disk_bytes": self.bytes,
            "disk_files": self.files,
            "disk_max_bytes": self.max_bytes,
        }
