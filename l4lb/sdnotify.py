"""Telling a service manager (systemd) that l4lb is ready, reloading or stopping.

The protocol is sd_notify(3): one datagram of `KEY=value` lines sent to the AF_UNIX socket
named by `$NOTIFY_SOCKET` (a path, or an abstract-namespace name when it starts with `@`).
It is small enough that libsystemd (or the `sdnotify`/`systemd-python` packages) would add
weight and nothing else. l4lb sends:

- `READY=1` once every listener is bound (with workers: once every worker has reported);
- `RELOADING=1` with `MONOTONIC_USEC=` (CLOCK_MONOTONIC in microseconds, which
  `Type=notify-reload` requires to tell this reload from an earlier one) when a reload starts,
  then `READY=1` with a `STATUS=` line saying whether it was applied or refused;
- `STOPPING=1` when the drain starts.

Without `$NOTIFY_SOCKET` (not run by systemd, or `Type=simple`) `Notifier.from_environ`
returns None and nothing is sent. A failed send is logged once and never stops the proxy:
the service manager is told, it is not depended on.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

__all__ = ["Notifier", "notify_message"]

log = logging.getLogger("l4lb")


def notify_message(**fields: str | int) -> bytes:
    """`KEY=value` lines, one per field, in the order given. A newline in a value would start
    a field of its own, so it is replaced by a space (STATUS= carries error messages)."""
    lines = [f"{key}={str(value).replace(chr(10), ' ')}" for key, value in fields.items()]
    return "\n".join(lines).encode()


def _address(name: str) -> str | bytes:
    """`@name` is Linux's abstract namespace: a leading NUL byte instead of the `@`."""
    return b"\0" + name[1:].encode() if name.startswith("@") else name


class Notifier:
    """Sends sd_notify datagrams to one socket. Not thread-safe; cheap to call."""

    def __init__(self, socket_name: str) -> None:
        self.address = _address(socket_name)
        self.socket_name = socket_name
        self._warned = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Notifier | None:
        """A notifier for `$NOTIFY_SOCKET`, or None when it is unset or empty."""
        name = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
        return cls(name) if name else None

    def send(self, **fields: str | int) -> bool:
        """Send one message; False (logged once) if the socket cannot be reached."""
        data = notify_message(**fields)
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(data, self.address)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning(
                    "cannot notify the service manager at %s: %s",
                    self.socket_name,
                    exc.strerror or exc,
                )
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send(READY=1, STATUS=status)

    def reloading(self, monotonic_usec: int) -> bool:
        """`monotonic_usec`: `time.clock_gettime_ns(CLOCK_MONOTONIC) // 1000` when the reload
        started."""
        return self.send(RELOADING=1, MONOTONIC_USEC=monotonic_usec, STATUS="reloading")

    def stopping(self, status: str = "draining connections") -> bool:
        return self.send(STOPPING=1, STATUS=status)
