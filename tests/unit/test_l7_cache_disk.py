"""The cache's disk tier on a real directory (l7/cache/disk.py): round trips, what a torn,
foreign or colliding file does (a miss), purges, and the size bound."""

from __future__ import annotations

import os
import shutil

from l7.cache.disk import DiskStore
from l7.cache.store import Entry, MemoryStore


def entry(body: bytes = b"hello", tags: tuple = (), vary: tuple = ()) -> Entry:
    headers = [(b"cache-control", b"max-age=60"), (b"x-\xe9", b"caf\xe9")]
    return Entry(200, headers, body, vary, 1.5, 2.5, 60.0, tags)


def test_round_trip_keeps_every_field_and_variant(tmp_path):
    disk = DiskStore(str(tmp_path), 1 << 20)
    en, fr = ((b"accept-language", b"en"),), ((b"accept-language", b"fr"),)
    disk.save("http://h/a", [entry(b"one", ("t",), en), entry(b"\x00two" * 100, (), fr)])
    again = DiskStore(str(tmp_path), 1 << 20)  # another worker, or after a restart
    assert again.load("http://h/a") == [entry(b"one", ("t",), en), entry(b"\x00two" * 100, (), fr)]
    assert again.files == 1 and again.bytes == disk.bytes > 400
    assert again.load("http://h/b") == []


def test_damaged_or_foreign_files_are_misses(tmp_path):
    disk = DiskStore(str(tmp_path), 1 << 20)
    disk.save("http://h/a", [entry(b"x" * 100)])
    name = disk._file("http://h/a")
    path = tmp_path / name
    path.write_bytes(path.read_bytes()[:-10])  # torn
    assert disk.load("http://h/a") == []
    path.write_bytes(b"not a cache file\n")
    assert disk.load("http://h/a") == []
    disk.save("http://h/other", [entry()])
    shutil.copy(disk._file("http://h/other"), name)  # a file naming another key
    assert disk.load("http://h/a") == [] and disk.remove("http://h/a") == 0


def test_purges_on_disk(tmp_path):
    disk = DiskStore(str(tmp_path), 1 << 20)
    en, fr = ((b"accept-language", b"en"),), ((b"accept-language", b"fr"),)
    disk.save("http://h/a", [entry(tags=("x",), vary=en), entry(vary=fr)])
    disk.save("http://h/b/1", [entry(tags=("x",))])
    disk.save("http://h/b/2", [entry()])
    assert disk.purge_matching(tag="x") == 2
    assert [e.vary for e in disk.load("http://h/a")] == [fr] and disk.load("http://h/b/1") == []
    assert disk.purge_matching(prefix="http://h/b/") == 1
    assert disk.remove("http://h/a") == 1 and disk.remove("http://h/a") == 0


def test_the_bound_is_kept_by_scans_oldest_first(tmp_path):
    disk = DiskStore(str(tmp_path), 20_000)
    for i in range(60):
        disk.save(f"http://h/{i}", [entry(b"x" * 900)])
        os.utime(disk._file(f"http://h/{i}"), (1000 + i, 1000 + i))  # an age order to trim by
        size = sum(f.stat().st_size for f in tmp_path.rglob("*") if f.is_file())
        assert size <= 20_000 * 1.1
    disk.scan()
    assert disk.load("http://h/59") != [] and disk.load("http://h/0") == []
    stale = tmp_path / "ab"
    stale.mkdir(exist_ok=True)
    (stale / "dead.1.1.tmp").write_bytes(b"x")
    os.utime(stale / "dead.1.1.tmp", (0, 0))
    disk.scan()
    assert not (stale / "dead.1.1.tmp").exists()


def test_memory_store_reads_through_and_writes_through(tmp_path):
    one, two = MemoryStore(1 << 20, 1 << 16), MemoryStore(1 << 20, 1 << 16)
    for store in (one, two):
        store.attach_disk(str(tmp_path / "d"), 1 << 20)
    one.put("http://h/a", entry(tags=()))
    assert [e.body for e in two.variants("http://h/a")] == [b"hello"]  # another worker
    assert two.objects == 1 and two.stores == 0
    assert two.purge("http://h/a") == 1 and one.purge("http://h/a") == 1  # memory copy
    assert MemoryStore(1 << 20, 1 << 16).variants("http://h/a") == []
    blocked = tmp_path / "file"
    blocked.write_text("")
    three = MemoryStore(1 << 20, 1 << 16)
    three.attach_disk(str(blocked / "d"), 1 << 20)  # logged, memory only
    assert three.disk is None and three.put("k", entry())
