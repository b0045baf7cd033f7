"""The instance's shared memory: one anonymous memfd region the supervisor makes before it
starts any worker, inherited by every worker (and by a restarted one) as a file descriptor.

Why a memfd and not `multiprocessing.shared_memory`: it has no name, so nothing is left in
/dev/shm when the instance is killed, and no resource-tracker process is needed; the kernel
frees it when the last process holding it exits. Workers are started by a command line
(`supervisor.py` says why), so an inherited descriptor is the natural handle.

Layout: fixed-size tables, each a typed array (`memoryview.cast`), computed from the header
(worker count and capacities) so every process finds the same offsets. Two kinds of write:

- single-writer counters (a worker's row of active connections per server, its column of
  connections per client): only that worker writes them, with one aligned 8- or 4-byte store,
  so no lock is needed; readers sum the rows. The supervisor zeroes a dead worker's rows
  before it restarts it (`forget`), so what the dead worker counted does not leak.
- read-modify-write state shared by every worker (a GCRA's theoretical arrival time, a
  table slot taken by a new key): under `lock()`, an flock on the worker's own open file
  description of the memfd. The kernel drops it when its holder dies, so a worker killed
  while holding it cannot wedge the others (a semaphore in the segment would).

Measured in-process on the 2-CPU test machine (loaded, best of 5): a counter add 90 ns; the
sum of two rows 60 ns; flock lock + unlock 0.95 us; fcntl byte-range lock + unlock 1.6 us;
a process-shared `sem_t` via ctypes 0.35 us (not robust against a holder's death, so not
used); a robust process-shared pthread mutex via ctypes about half the flock's cost (2.4
against 4.2 us in one loaded run), not worth its dependence on libc's ABI; keyed BLAKE2b
of a short key 0.54 us against `hash()` 0.04 us. Keys are therefore hashed with `hash()`,
which agrees across the workers because the supervisor gives them one random
`PYTHONHASHSEED` (random per instance, so clients cannot aim at collisions).
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import secrets
from collections.abc import Iterator

from l4lb.errors import L4lbError

__all__ = ["CLIENT_SLOTS", "HEALTH_BYTES", "RATE_SLOTS", "SERVER_SLOTS", "Segment"]

MAGIC = 0x6C346C6273686D31  # "l4lbshm1"
SERVER_SLOTS = 4096  # servers over every pool, reloads included (slots are reused)
CLIENT_SLOTS = 65536  # client addresses tracked at once over every listener
RATE_SLOTS = 131072  # keys of route rate limits remembered at once
HEALTH_BYTES = 64  # per server: state byte, detail length, detail text
_HEADER = 4096

# name -> (array format, item size, items per worker or for all, per worker?)
_FIELDS: tuple[tuple[str, str, int, str, bool], ...] = (
    ("srv_keys", "q", 8, "S", False),
    ("srv_health", "B", 1, "H", False),
    ("srv_uses", "B", 1, "S", True),
    ("srv_active", "q", 8, "S", True),
    ("cli_keys", "q", 8, "C", False),
    ("cli_tat", "d", 8, "C", False),
    ("cli_counts", "i", 4, "C", True),
    ("rate_keys", "q", 8, "R", False),
    ("rate_tat", "d", 8, "R", False),
)


def layout(workers: int) -> tuple[dict[str, tuple[int, int, str, bool]], int]:
    """Region name -> (offset, bytes, format, per worker), and the total size."""
    counts = {"S": SERVER_SLOTS, "H": SERVER_SLOTS * HEALTH_BYTES, "C": CLIENT_SLOTS}
    counts["R"] = RATE_SLOTS
    out = {}
    offset = _HEADER
    for name, fmt, size, count, per_worker in _FIELDS:
        nbytes = size * counts[count] * (workers if per_worker else 1)
        out[name] = (offset, nbytes, fmt, per_worker)
        offset += -(-nbytes // 4096) * 4096  # page-aligned regions
    return out, offset


class Segment:
    """One process's mapping of the shared region. `index` is the worker's (-1: the
    supervisor, which only makes it and forgets dead workers)."""

    def __init__(self, fd: int, index: int, *, lock_fd: int = -1) -> None:
        self.fd = fd
        self.index = index
        header = os.pread(fd, 24, 0)
        if len(header) < 24 or int.from_bytes(header[:8], "little") != MAGIC:
            raise L4lbError(f"descriptor {fd} is not an l4lb shared segment")
        self.workers = int.from_bytes(header[8:16], "little")
        self.seed = int.from_bytes(header[16:24], "little")
        self.regions, size = layout(self.workers)
        self.map = mmap.mmap(fd, size)
        self.raw = memoryview(self.map)
        self._lock_fd = lock_fd

    @classmethod
    def create(cls, workers: int) -> Segment:
        """Make the region for `workers` processes (the supervisor, before any worker).
        The pages are only allocated when first written, so the tables' size costs address
        space, not memory. Raises L4lbError where memfd is unavailable."""
        try:
            fd = os.memfd_create("l4lb-shared", os.MFD_CLOEXEC)
        except (AttributeError, OSError) as exc:
            raise L4lbError(f"cannot make the workers' shared memory: {exc}") from None
        _, size = layout(workers)
        os.ftruncate(fd, size)
        seed = secrets.randbelow(2**32)
        header = MAGIC.to_bytes(8, "little") + workers.to_bytes(8, "little")
        os.pwrite(fd, header + seed.to_bytes(8, "little"), 0)
        return cls(fd, -1)

    @classmethod
    def attach(cls, fd: int, index: int) -> Segment:
        """Map the region inherited as `fd` in worker `index`, and start its rows afresh
        (a restarted worker takes the place of a dead one). Raises L4lbError if `fd` is not
        a segment or this process does not hash as its siblings do."""
        segment = cls(fd, index, lock_fd=os.open(f"/proc/self/fd/{fd}", os.O_RDWR))
        if not 0 <= index < segment.workers:
            raise L4lbError(f"worker index {index} is outside the {segment.workers} workers")
        if os.environ.get("PYTHONHASHSEED") != str(segment.seed):
            raise L4lbError("PYTHONHASHSEED differs from the supervisor's; start via `l4lb up`")
        segment.forget(index)
        return segment

    def array(self, name: str) -> memoryview:
        """The whole region `name` as a typed array (every worker's rows for a per-worker
        one, worker w's row starting at w * its length)."""
        offset, nbytes, fmt, _ = self.regions[name]
        return self.raw[offset : offset + nbytes].cast(fmt)

    def forget(self, index: int) -> None:
        """Zero worker `index`'s rows: a worker that exited counts nothing any more. Rows
        that are zero already are left alone (read with `pread`, which does not give pages
        to the holes of the memfd), so a worker that counted nothing costs no memory."""
        for offset, nbytes, _, per_worker in self.regions.values():
            if per_worker:
                row = nbytes // self.workers
                start = offset + index * row
                if os.pread(self.fd, row, start).count(0) != row:
                    self.raw[start : start + row] = bytes(row)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the segment's lock (blocks for as long as another worker's critical section,
        a few microseconds)."""
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def acquire(self) -> None:
        """`lock()` without the context manager (hot paths: 0.3 us cheaper)."""
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)

    def release(self) -> None:
        fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Unmap (after the tables built on it are dropped) and close the descriptors."""
        with contextlib.suppress(BufferError):  # views still held elsewhere: leave it to exit
            self.raw.release()
            self.map.close()
        for fd in (self._lock_fd, self.fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
