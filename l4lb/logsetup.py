"""Where `l4lb up` and `l4lb worker` write: the event log (the `l4lb` logger) and the access
log, from the command line (`--log-file`, `--log-target`, `--log-format`, `--no-access-log`)
and `[global]` (`log`, `log_facility`, `access_log`, `access_log_format`, `log_format`).

Precedence, most specific first: `access_log = "FILE"` sends access lines to FILE; a syslog
target (`--log-target`, else `global.log`) takes the event log, and the access lines unless
they have a file; `--log-file` takes whatever is left; then stderr (events) and stdout
(access lines). Every file opened here is a `LogFile` that SIGUSR1 reopens.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any, TextIO

from l4lb.accesslog import AccessLog
from l4lb.config.schema import Settings
from l4lb.errors import L4lbError
from l4lb.logfiles import LogFile
from l4lb.logtarget import SyslogLines, parse_target, syslog_handler

__all__ = ["JsonFormatter", "setup_logs"]


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created))
        return json.dumps(
            {
                "time": stamp,
                "type": "event",
                "level": record.levelname.lower(),
                "message": record.getMessage(),
            }
        )


def _stream_handler(fmt: str, stream: Any) -> logging.Handler:
    handler = logging.StreamHandler(stream)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        # UTC with a Z, as the access log writes its times: one clock in one log.
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%SZ")
        formatter.converter = time.gmtime
        handler.setFormatter(formatter)
    return handler


def setup_logs(
    settings: Settings,
    fmt: str,
    *,
    log_file: str | None = None,
    log_target: str | None = None,
    quiet: bool = False,
    no_access_log: bool = False,
) -> AccessLog:
    """Install the event log handler on the `l4lb` logger and return the access log.
    `quiet` (the live view owns the terminal) sends what would reach the terminal nowhere.
    Raises L4lbError if a log file or the syslog socket cannot be opened."""
    files: list[LogFile] = []

    def open_file(path: str, what: str, line_buffered: bool) -> LogFile:
        try:
            file = LogFile(path, line_buffered=line_buffered)
        except OSError as exc:
            raise L4lbError(f"{what} {path}: {exc.strerror or exc}") from None
        files.append(file)
        return file

    terminal_out: TextIO = sys.stdout
    terminal_err: TextIO = sys.stderr
    if quiet:
        terminal_out = terminal_err = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115
    shared: Any = open_file(log_file, "--log-file", True) if log_file else None
    kind, _ = parse_target(log_target or settings.log)
    access: Any
    if kind == "syslog":
        try:
            handler = syslog_handler(log_target or settings.log, settings.log_facility)
        except OSError as exc:
            raise L4lbError(f"syslog {log_target or settings.log}: {exc.strerror or exc}") from None
        access = SyslogLines(handler)
    else:
        handler = _stream_handler(fmt, shared or terminal_err)
        access = shared or terminal_out
    if isinstance(settings.access_log, str) and not no_access_log:
        access = open_file(settings.access_log, "global.access_log", False)
    root = logging.getLogger("l4lb")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False
    access_log = AccessLog(fmt, access, template=settings.access_log_format, reopen=tuple(files))
    access_log.enabled = bool(settings.access_log) and not no_access_log
    return access_log
