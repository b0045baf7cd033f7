"""`l4lb up --pid-file PATH`: the process id where scripts, init systems and logrotate look.

As nginx and HAProxy do, the file holds the pid of the process to signal (the supervisor when
there are workers) and a newline. It is written once the listeners are bound, so its presence
means "serving", and atomically (a temporary file in the same folder, then rename), so a
reader never sees it half written; it is removed at exit. A file left by a process that is
gone (a crash, a SIGKILL, a reboot) is stale and overwritten. A file naming a live l4lb is
refused at start, before anything is bound, with a message naming the pid: two instances with
one pid file would leave it pointing at the wrong one.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from l4lb.errors import L4lbError

__all__ = ["PidFile", "read_pid"]


def read_pid(path: str | Path) -> int | None:
    """The pid in `path`, or None if the file is missing or does not hold a pid."""
    try:
        text = Path(path).read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def is_l4lb(pid: int) -> bool:
    """Whether `pid` is a live l4lb process (not a process that reused a stale pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by someone else: look at its command line
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # alive and unreadable (no /proc): assume the worst
    # Empty: a process in the middle of exec (or a kernel thread): cannot tell, so refuse.
    return b"l4lb" in cmdline or not cmdline


class PidFile:
    """One pid file: `claim()` at start, `write()` when serving, `remove()` at exit."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.written = False

    def claim(self) -> None:
        """Refuse to start if the file names a running l4lb. Raises L4lbError."""
        pid = read_pid(self.path)
        if pid is not None and pid != os.getpid() and is_l4lb(pid):
            raise L4lbError(
                f"--pid-file {self.path}: l4lb is already running as pid {pid} "
                "(stop it first, or use another pid file)"
            )
        tmp = self._tmp()
        try:  # fail now, not once the listeners are bound, if the folder is not writable
            tmp.write_text("", encoding="ascii")
            tmp.unlink()
        except OSError as exc:
            raise L4lbError(f"--pid-file {self.path}: {exc.strerror or exc}") from None

    def _tmp(self) -> Path:
        return self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")

    def write(self) -> None:
        """Write this process's pid atomically. Raises L4lbError if the folder is not
        writable."""
        tmp = self._tmp()
        try:
            tmp.write_text(f"{os.getpid()}\n", encoding="ascii")
            os.replace(tmp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise L4lbError(f"--pid-file {self.path}: {exc.strerror or exc}") from None
        self.written = True

    def remove(self) -> None:
        """Remove the file if it still holds this process's pid (another instance may have
        taken it over since)."""
        if self.written and read_pid(self.path) == os.getpid():
            with contextlib.suppress(OSError):
                self.path.unlink()
        self.written = False
