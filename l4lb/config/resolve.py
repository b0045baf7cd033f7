"""Resolve server host names when a config is loaded, so a name that does not resolve is a
config error (`l4lb check`, start, reload) instead of a server that is silently down.

This is what `haproxy -c` ("could not resolve address") and `nginx -t` ("host not found in
upstream") do. Names are resolved once per load: a reload resolves them again, so a DNS
change takes effect at the next reload; between reloads a server keeps the address it had.
A reload whose names no longer resolve is refused like any other bad config, and the running
config (with its addresses) stays.

Blocking: `getaddrinfo` waits on the system resolver (up to its timeouts when DNS is down).
Call `unresolved_servers` from a worker thread when an event loop is running.

Names under `.invalid` fail at once without asking the resolver, as RFC 6761 section 6.4
asks of name resolution libraries; IP literals are never looked up.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable

from l4lb.config.lines import format_path
from l4lb.config.values import Address
from l4lb.errors import ConfigError

__all__ = ["resolve_host", "unresolved_servers"]

_ALLOWED = "an IP address, or a host name that resolves when the config is loaded"


def resolve_host(host: str, port: int) -> str:
    """Why `host` does not resolve, or "" if it does (or is an IP literal). Blocks."""
    try:
        ipaddress.ip_address(host)
        return ""
    except ValueError:
        pass
    name = host.rstrip(".").lower()
    if name == "invalid" or name.endswith(".invalid"):
        return "the .invalid domain never resolves (RFC 6761)"
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        return str(getattr(exc, "strerror", None) or exc)
    return ""


def unresolved_servers(
    addresses: Iterable[tuple[list[str | int], Address]],
    file: str,
    line_of: Callable[[list[str | int]], int],
) -> list[ConfigError]:
    """One located error per server address (key path, address) whose host does not
    resolve; each name is asked once."""
    seen: dict[str, str] = {}
    errors = []
    for parts, address in addresses:
        host = address.host
        if host not in seen:
            seen[host] = resolve_host(host, address.port)
        if seen[host]:
            errors.append(
                ConfigError(
                    file,
                    format_path(parts),
                    line_of(parts),
                    f"cannot resolve {host!r}: {seen[host]}",
                    _ALLOWED,
                )
            )
    return errors
