"""An l4lb HTTP engine in-process, for the stage benchmarks (compress_speed.py,
security_stack.py): a config text loaded as `l4lb up` would, one `HttpEngine` for its first
listener, and a pooled server connection per pool on a transport that only collects writes,
so that a request fed to `l7.h1.H1Server` and a response fed to that connection run the
whole pipeline with no socket (as bench/http_inproc.py does for the plain route)."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from http_inproc import CollectingTransport  # bench/ is on sys.path when a script here runs

from l4lb.accesslog import AccessLog
from l4lb.config.load import load
from l4lb.pool import build_pools
from l7.engine import HttpEngine, UpstreamRegistry
from l7.h1 import H1Server
from l7.upstream import UpstreamConn

__all__ = ["Client", "engine_from_toml"]


def engine_from_toml(
    text: str, loop: asyncio.AbstractEventLoop
) -> tuple[HttpEngine, dict[str, UpstreamConn]]:
    """The engine of the config's first listener, and one idle pooled server connection per
    pool (feed it a response with `data_received` after each forwarded request)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "inproc.toml"
        path.write_text(text)
        config = load(path)
    pools = build_pools(config.pools, {}, loop.time())
    access_log = AccessLog()
    access_log.enabled = False
    engine = HttpEngine(config.listeners[0], pools, UpstreamRegistry(loop), {}, access_log, None)
    conns = {}
    for name, pool in pools.items():
        upstream_pool = engine.link(pool, pool.servers[0]).upstream
        conn = UpstreamConn(upstream_pool)
        conn.connection_made(CollectingTransport())
        conn.reusable = True
        upstream_pool.put(conn)
        conns[name] = conn
    return engine, conns


class Client:
    """One client connection to `engine` (its writes counted in `transport.writes`)."""

    def __init__(self, engine: HttpEngine) -> None:
        self.server = H1Server(lambda: engine, ("127.0.0.1", 40000))
        self.transport = CollectingTransport()
        self.server.connection_made(self.transport)
