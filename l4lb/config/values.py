"""Converters for config values: each takes what TOML gave and returns the typed value, or
raises `BadValue` with what is wrong and what is allowed.

Durations and sizes accept the spellings operators know from nginx and HAProxy
(`"250ms"`, `"5s"`, `"2m"`, `"1h"`; `"64k"`, `"1m"`), or a bare number (seconds, bytes).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Address",
    "BadValue",
    "address",
    "boolean",
    "choice",
    "duration",
    "host_problem",
    "integer",
    "parse_address",
    "seconds_or_zero",
    "size",
    "status_ranges",
    "string",
]


class BadValue(ValueError):
    def __init__(self, message: str, allowed: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.allowed = allowed


@dataclass(frozen=True, slots=True)
class Address:
    """A host and port as written; `host` is an IP literal or a name resolved at connect."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def duration(value: Any, *, allow_zero: bool = False) -> float:
    """Seconds as a float, from `"250ms"`, `"5s"`, `"2m"`, `"1h"` or a number of seconds."""
    allowed = 'a duration such as "250ms", "5s", "2m", "1h", or a number of seconds'
    if isinstance(value, bool):
        raise BadValue(f"expected a duration, got {value!r}", allowed)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        m = _DURATION.match(value)
        if not m:
            raise BadValue(f"{value!r} is not a duration", allowed)
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    else:
        raise BadValue(f"expected a duration, got {type(value).__name__}", allowed)
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise BadValue(f"{value!r} must be greater than zero", allowed)
    return seconds


def integer(lo: int, hi: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadValue(f"expected a whole number, got {value!r}", f"{lo} to {hi}")
        if not lo <= value <= hi:
            raise BadValue(f"{value} is out of range", f"{lo} to {hi}")
        return value

    return convert


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise BadValue(f"expected true or false, got {value!r}", "true, false")
    return value


def string(value: Any) -> str:
    if not isinstance(value, str):
        raise BadValue(f"expected a string, got {value!r}", "a quoted string")
    return value


def choice(*options: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if value not in options:
            raise BadValue(f"{value!r} is not one of the choices", ", ".join(options))
        return value

    return convert


def parse_address(text: str, *, default_host: str | None = None) -> Address:
    """`"127.0.0.1:80"`, `"[::1]:80"`, `"name:80"`; `":80"` uses `default_host`."""
    allowed = '"host:port", "[ipv6]:port"' + (', ":port"' if default_host else "")
    if not isinstance(text, str):
        raise BadValue(f"expected an address string, got {text!r}", allowed)
    if text.startswith("["):
        close = text.find("]")
        if close < 0 or text[close + 1 : close + 2] != ":":
            raise BadValue(f"{text!r} is not an address", allowed)
        host, port_text = text[1:close], text[close + 2 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise BadValue(f"{host!r} is not an IPv6 address", allowed) from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or ":" in host:
            raise BadValue(f"{text!r} is not an address", allowed)
        if not host:
            if default_host is None:
                raise BadValue(f"{text!r} has no host", allowed)
            host = default_host
        if host == "*":
            host = "0.0.0.0"
        problem = host_problem(host)
        if problem:
            raise BadValue(
                f"{text!r}: {problem}",
                "an IP address, or a host name of letters, digits, '-' and dots",
            )
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise BadValue(f"{text!r} has no valid port", "a port from 1 to 65535")
    return Address(host, int(port_text))


_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


def host_problem(host: str) -> str:
    """What is wrong with `host` as an IPv4 literal or a host name (RFC 1123), or "".

    Checked before any resolver sees the name: `127.0.0.300` is not a name to look up in DNS
    (glibc would send it to the resolver), and a name with spaces is not a name at all."""
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return f"{host!r} is not an IPv4 address"
        return ""
    name = host[:-1] if host.endswith(".") else host
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        return f"{host!r} is not a host name"
    return ""


def address(value: Any) -> Address:
    return parse_address(value)


def status_ranges(value: Any) -> tuple[tuple[int, int], ...]:
    """HTTP status expectations: `200`, `"2xx"`, `"200-399"`, or a list of those."""
    allowed = '200, "2xx", "200-399", or a list of those'
    items = value if isinstance(value, list) else [value]
    out: list[tuple[int, int]] = []
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool) and 100 <= item <= 599:
            out.append((item, item))
        elif isinstance(item, str) and re.fullmatch(r"[1-5]xx", item):
            base = int(item[0]) * 100
            out.append((base, base + 99))
        elif isinstance(item, str) and re.fullmatch(r"\d{3}-\d{3}", item):
            lo, hi = (int(x) for x in item.split("-"))
            if not 100 <= lo <= hi <= 599:
                raise BadValue(f"{item!r} is not a status range", allowed)
            out.append((lo, hi))
        else:
            raise BadValue(f"{item!r} is not an HTTP status expectation", allowed)
    if not out:
        raise BadValue("the list is empty", allowed)
    return tuple(out)


def size(value: Any) -> int:
    """Bytes from `1024`, `"64k"`, `"10m"`, `"1g"` (nginx's size suffixes)."""
    allowed = 'a size such as 1048576, "64k", "10m", "1g"'
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    m = re.fullmatch(r"\s*(\d+)\s*([kmg]?)\s*", value) if isinstance(value, str) else None
    if not m:
        raise BadValue(f"{value!r} is not a size", allowed)
    return int(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2)]


def seconds_or_zero(value: Any) -> float:
    """Seconds from a duration where 0 means off."""
    return duration(value, allow_zero=True)
