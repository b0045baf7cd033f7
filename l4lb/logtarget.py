"""Where the event log (and, without an access-log file, the access log) goes: stderr or
syslog. `[global] log` or `l4lb up --log-target`.

- `stderr` (the default). Under systemd that already is the journal: journald stamps, tags
  and stores each line, so `journalctl -u l4lb` needs nothing more.
- `syslog`: the local syslog socket /dev/log (rsyslog, syslog-ng, or journald's own).
- `syslog:/path`: another local datagram socket.
- `syslog:HOST:PORT` (`syslog:[::1]:514`): UDP to a syslog server, as HAProxy's
  `log 127.0.0.1:514 local0`.

Messages are RFC 3164 as the stdlib's SysLogHandler writes them, tagged `l4lb[PID]:`, with
`log_facility` (default daemon). Access lines go to the same place when syslog is chosen
and `access_log` is not a file, at priority info, as HAProxy logs its traffic.
"""

from __future__ import annotations

import logging
import logging.handlers
import socket

__all__ = ["FACILITIES", "SyslogLines", "parse_target", "syslog_handler"]

FACILITIES = tuple(logging.handlers.SysLogHandler.facility_names)
DEV_LOG = "/dev/log"


def parse_target(value: str) -> tuple[str, str | tuple[str, int]]:
    """`("stderr", "")` or `("syslog", address)`: a unix socket path or (host, port) for
    UDP. Raises ValueError saying what is wrong."""
    if value == "stderr":
        return "stderr", ""
    if value == "syslog":
        return "syslog", DEV_LOG
    if not value.startswith("syslog:"):
        raise ValueError(f"{value!r} is not a log target")
    rest = value[len("syslog:") :]
    if rest.startswith("/"):
        return "syslog", rest
    host, sep, port = rest.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r}: expected syslog:HOST:PORT or syslog:/path")
    return "syslog", (host, int(port))


def syslog_handler(target: str, facility: str = "daemon") -> logging.Handler:
    """A handler sending to the syslog `target` (as `parse_target` reads it). Raises
    OSError if a local socket cannot be reached."""
    _, address = parse_target(target)
    kind = socket.SOCK_DGRAM
    handler = logging.handlers.SysLogHandler(address, facility, socktype=kind)  # type: ignore[arg-type]
    handler.setFormatter(logging.Formatter("l4lb[%(process)d]: %(levelname)s %(message)s"))
    return handler


class SyslogLines:
    """A text stream for `AccessLog` whose every line becomes one syslog message (info)."""

    def __init__(self, handler: logging.Handler) -> None:
        self.handler = handler
        self.access = logging.Formatter("l4lb[%(process)d]: %(message)s")

    def write(self, text: str) -> int:
        for line in text.splitlines():
            record = logging.LogRecord("l4lb.access", logging.INFO, "", 0, line, None, None)
            self._emit(record)
        return len(text)

    def _emit(self, record: logging.LogRecord) -> None:
        saved = self.handler.formatter
        self.handler.formatter = self.access
        try:
            self.handler.emit(record)
        finally:
            self.handler.formatter = saved

    def flush(self) -> None:
        pass
