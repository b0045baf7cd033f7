"""One line per closed connection or HTTP request: text (HAProxy tcplog-like), JSON, or an
nginx-like `access_log_format` of `$variables` for HTTP requests (`compile_format`).

Lines are formatted with plain string operations and written to a buffered stream that is
flushed by the event loop at most a few times a second: the `logging` module's per-record
overhead would cost more than the relay itself for short connections.
"""

from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

__all__ = ["VARIABLES", "AccessLog", "ConnectionRecord", "compile_format"]

#: The variables of `access_log_format`, named as nginx names them (plus what a proxy adds).
VARIABLES = (
    "remote_addr",
    "remote_port",
    "time_iso8601",
    "msec",
    "request",
    "request_method",
    "request_uri",
    "host",
    "server_protocol",
    "http_version",
    "status",
    "bytes_sent",
    "body_bytes_sent",
    "request_time",
    "upstream_addr",
    "upstream_connect_time",
    "upstream_response_time",
    "request_id",
    "listener",
    "route",
    "retries",
    "waf",
)
_VAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


def compile_format(text: str) -> str:
    """An `access_log_format` as a `str.format_map` template. `$name` is a variable (the
    longest run of letters, digits and `_`, as in nginx), `$$` a literal `$`. Raises
    ValueError naming an unknown variable."""

    def one(m: re.Match[str]) -> str:
        if m.group(1) not in VARIABLES:
            raise ValueError(f"unknown variable ${m.group(1)}")
        return "{" + m.group(1) + "}"

    parts = text.replace("{", "{{").replace("}", "}}").split("$$")
    if any(p.endswith("$") or "$" in _VAR.sub("", p) for p in parts):
        raise ValueError("a '$' that starts no variable (write $$ for a '$')")
    return "$".join(_VAR.sub(one, p) for p in parts)


@dataclass(slots=True)
class ConnectionRecord:
    client: str
    listener: str
    pool: str
    server: str
    bytes_in: int  # client to server
    bytes_out: int  # server to client
    duration: float  # seconds from accept to close
    end: str  # client_close, server_close, idle_timeout, connect_timeout, refused, ...
    retries: int = 0
    sni: str = ""  # tls-passthrough and tls: the name the client asked for
    client_cert: str = ""  # tls with client_cert: the verified subject, e.g. "CN=client"


class AccessLog:
    def __init__(
        self,
        fmt: str = "text",
        stream: TextIO | None = None,
        *,
        template: str = "",
        reopen: tuple[Any, ...] = (),
    ) -> None:
        """`template` is an `access_log_format` (HTTP text lines; JSON ignores it);
        `reopen` the `LogFile`s this process writes, reopened by `reopen()` (SIGUSR1)."""
        self.fmt = fmt
        self.stream = stream or sys.stdout
        self.enabled = True
        self.template = compile_format(template) if template else ""
        self.files = reopen
        self._second = -1
        self._stamp_text = ""

    def _stamp(self) -> str:
        """The time of day, formatted once per second (strftime per line costs more than
        the rest of the line)."""
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._stamp_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
        return self._stamp_text

    def write(self, rec: ConnectionRecord) -> None:
        if not self.enabled:
            return
        stamp = self._stamp()
        if self.fmt == "json":
            line = json.dumps({"time": stamp + "Z", "type": "connection", **_fields(rec)})
        else:
            line = (
                f"{stamp}Z {rec.client} {rec.listener} {rec.pool}/{rec.server or '-'} "
                f"in={rec.bytes_in} out={rec.bytes_out} dur={rec.duration:.3f}s "
                f"end={rec.end} retries={rec.retries}"
            )
            if rec.sni:
                line += f" sni={rec.sni}"
            if rec.client_cert:
                line += f' client_cert="{rec.client_cert}"'
        try:
            self.stream.write(line + "\n")
        except (OSError, ValueError):  # a closed or broken log stream must not stop proxying
            self.enabled = False

    def write_http(
        self,
        *,
        client: tuple[str, int],
        listener: str,
        method: str,
        host: str,
        path: str,
        status: int,
        bytes_out: int,
        route: str,
        server: str,
        connect: float,
        response: float,
        total: float,
        request_id: str,
        retries: int,
        version: str = "1.1",
        waf: str = "",
    ) -> None:
        """One line per HTTP request (nginx's combined log, plus what a proxy adds); `version`
        is the client's HTTP version ("1.0", "1.1", "2", "3"); `waf` the ids of the WAF
        rules the request matched, comma-separated (only shown when there are some)."""
        if not self.enabled:
            return
        stamp = self._stamp()
        peer = f"[{client[0]}]:{client[1]}" if ":" in client[0] else f"{client[0]}:{client[1]}"
        if self.fmt == "json":
            line = json.dumps(
                {
                    "time": stamp + "Z",
                    "type": "request",
                    "client": peer,
                    "listener": listener,
                    "method": method,
                    "host": host,
                    "path": path,
                    "status": status,
                    "bytes": bytes_out,
                    "route": route,
                    "server": server,
                    "connect_time": round(connect, 6) if connect >= 0 else None,
                    "response_time": round(response, 6) if response >= 0 else None,
                    "total_time": round(total, 6),
                    "request_id": request_id,
                    "retries": retries,
                    "http_version": version,
                    **({"waf": waf} if waf else {}),
                }
            )
        elif self.template:
            line = self.template.format_map(
                {
                    "remote_addr": client[0],
                    "remote_port": client[1],
                    "time_iso8601": stamp + "Z",
                    "msec": f"{time.time():.3f}",
                    "request": f"{method} {path} HTTP/{version}",
                    "request_method": method,
                    "request_uri": path,
                    "host": host or "-",
                    "server_protocol": f"HTTP/{version}",
                    "http_version": version,
                    "status": status,
                    "bytes_sent": bytes_out,
                    "body_bytes_sent": bytes_out,
                    "request_time": f"{total:.3f}",
                    "upstream_addr": server,
                    "upstream_connect_time": f"{connect:.3f}" if connect >= 0 else "-",
                    "upstream_response_time": f"{response:.3f}" if response >= 0 else "-",
                    "request_id": request_id or "-",
                    "listener": listener,
                    "route": route,
                    "retries": retries,
                    "waf": waf or "-",
                }
            )
        else:
            line = (
                f'{stamp}Z {peer} {listener} "{method} {host}{path}" {status} {bytes_out} '
                f"route={route} server={server} connect={_ms(connect)} response={_ms(response)} "
                f"total={total * 1000:.1f}ms id={request_id} retries={retries} http={version}"
            )
            if waf:
                line += f" waf={waf}"
        try:
            self.stream.write(line + "\n")
        except (OSError, ValueError):
            self.enabled = False

    def flush(self) -> None:
        try:
            self.stream.flush()
        except (OSError, ValueError):
            self.enabled = False

    def reopen(self) -> None:
        """Reopen the log files (SIGUSR1, after logrotate renamed them)."""
        self.flush()
        for file in self.files:
            file.reopen()


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}ms" if seconds >= 0 else "-"


def _fields(rec: ConnectionRecord) -> dict[str, object]:
    return {
        "client": rec.client,
        "listener": rec.listener,
        "pool": rec.pool,
        "server": rec.server,
        "bytes_in": rec.bytes_in,
        "bytes_out": rec.bytes_out,
        "duration": round(rec.duration, 6),
        "end": rec.end,
        "retries": rec.retries,
        "sni": rec.sni or None,
        "client_cert": rec.client_cert or None,
    }
