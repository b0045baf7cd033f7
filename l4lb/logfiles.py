"""Log files that SIGUSR1 reopens, for logrotate: nginx's USR1 and HAProxy's log reopening.

logrotate renames `access.log` to `access.log.1` and signals the process; until it reopens,
the process keeps writing into the renamed file (it holds the descriptor, not the name).
`LogFile.reopen` opens the path again (creating it) and only then closes the old file, so
no line is lost and a reopen that fails (a full disk, a permission taken away) keeps the old
file and says why. With workers, the supervisor forwards SIGUSR1 to every worker, each of
which reopens its own descriptors. After `[global] user` drops privileges, the reopen runs
as that user: the log folder must be writable by it (nginx's master reopens as root; here
the process that writes is the one that reopens).
"""

from __future__ import annotations

import logging

__all__ = ["LogFile"]

log = logging.getLogger("l4lb")


class LogFile:
    """A text file opened for appending by path, that can be reopened in place. It quacks
    like the stream `logging.StreamHandler` and `AccessLog` write to."""

    def __init__(self, path: str, *, line_buffered: bool = False) -> None:
        """Raises OSError if `path` cannot be opened for appending."""
        self.path = path
        self._buffering = 1 if line_buffered else -1
        self._file = self._open()

    def _open(self):
        return open(self.path, "a", buffering=self._buffering, encoding="utf-8")

    def write(self, text: str) -> int:
        return self._file.write(text)

    def flush(self) -> None:
        self._file.flush()

    def isatty(self) -> bool:
        return False

    def reopen(self) -> bool:
        """Open the path again and switch to it; False (logged) if it cannot be opened."""
        try:
            new = self._open()
        except OSError as exc:
            log.error("cannot reopen %s: %s; still writing to the old file", self.path, exc)
            return False
        old, self._file = self._file, new
        try:
            old.close()  # flushes what was buffered into the old (renamed) file
        except OSError:
            pass
        return True

    def close(self) -> None:
        self._file.close()
