"""Active health probes: the IO half of health checking (the decision is `Server.on_check`).

One task per server, owned by the runtime's task group and cancelled as a group on reload or
shutdown. A TCP probe is a connect; an HTTP probe sends `GET path HTTP/1.0` and reads the
status line. Each probe runs under `fail_after(timeout)`. With `workers > 1` only worker 0
probes, and publishes each state for the others (`l4lb.shared.servers`).
"""

from __future__ import annotations

import logging
import random

import anyio

from l4lb.config.schema import HealthConfig
from l4lb.health.state import Transition
from l4lb.server import Server

__all__ = ["probe_http", "probe_tcp", "watch_server"]

log = logging.getLogger("l4lb")
_MAX_STATUS_LINE = 1024


async def probe_tcp(host: str, port: int, timeout: float) -> tuple[bool, str]:
    """Connect and close. Returns (ok, detail for the view and logs)."""
    try:
        with anyio.fail_after(timeout):
            stream = await anyio.connect_tcp(host, port)
        await stream.aclose()
    except TimeoutError:
        return False, "tcp: timeout"
    except OSError as exc:
        return False, f"tcp: {exc.strerror or exc}"
    return True, "tcp: ok"


async def probe_http(host: str, port: int, cfg: HealthConfig) -> tuple[bool, str]:
    """`GET cfg.path` and check the status against `cfg.expect_status`."""
    request = (
        f"GET {cfg.path} HTTP/1.0\r\nHost: {cfg.host or host}\r\n"
        "User-Agent: l4lb-health-check\r\nConnection: close\r\n\r\n"
    ).encode()
    try:
        with anyio.fail_after(cfg.timeout):
            async with await anyio.connect_tcp(host, port) as stream:
                await stream.send(request)
                head = b""
                while b"\n" not in head and len(head) < _MAX_STATUS_LINE:
                    try:
                        head += await stream.receive(_MAX_STATUS_LINE)
                    except anyio.EndOfStream:
                        break
    except TimeoutError:
        return False, "http: timeout"
    except (OSError, anyio.BrokenResourceError) as exc:
        return False, f"http: {getattr(exc, 'strerror', None) or exc or type(exc).__name__}"
    parts = head.split(b"\n", 1)[0].split()
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return False, "http: not an HTTP response"
    status = int(parts[1])
    ok = any(lo <= status <= hi for lo, hi in cfg.expect_status)
    return ok, f"http: {status}"


async def watch_server(server: Server, cfg: HealthConfig) -> None:
    """Probe `server` every `cfg.interval` seconds forever (until cancelled)."""
    # Spread the first probes of many servers over one interval instead of a burst.
    await anyio.sleep(random.uniform(0, min(cfg.interval, 1.0)))
    while True:
        if cfg.type == "http":
            ok, detail = await probe_http(server.host, server.port, cfg)
        else:
            ok, detail = await probe_tcp(server.host, server.port, cfg.timeout)
        change = server.on_check(ok, anyio.current_time(), detail)
        if server.shared is not None:  # workers > 1: we probe for every worker
            server.shared.publish(server.slot, server.health.up, server.last_check)
        if change is Transition.WENT_DOWN:
            log.warning("server %s/%s is DOWN (%s)", server.pool, server.name, detail)
        elif change is Transition.WENT_UP:
            log.warning("server %s/%s is UP (%s)", server.pool, server.name, detail)
        await anyio.sleep(cfg.interval)
