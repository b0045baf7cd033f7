"""The running proxy: owns listeners, pools, health checks, demo backends, signals and reload.

Structure comes from anyio: one task group owns the health checks, the housekeeping ticker
and the signal handler, and nothing outlives `run`. The data path itself is loop callbacks
(`listener.py`, `relay.py`) registered and unregistered by this object.

Reload (SIGHUP) builds the new config beside the old one. If it does not validate, or a new
address cannot be bound, the old config keeps running and the errors are logged. Otherwise
the swap is one synchronous step on the loop: listening sockets whose address is kept are
handed over as they are (no connection is refused), established connections finish on the
pool and servers they started with, servers that keep their pool and name keep their health
and counters, and removed listeners stop accepting and drain.

Signals (the table is in README.md): SIGHUP reloads; SIGTERM or SIGINT stops accepting and
drains for up to `drain_timeout`; a second SIGTERM/SIGINT during that drain, or SIGQUIT at any
time, closes every connection at once (Caddy's mapping, and what Ctrl-C twice means in a
terminal). A worker (`hard_on_repeat=False`) takes only SIGQUIT as a hard stop: systemd and a
terminal signal the supervisor and its workers together, and the supervisor forwards the same
signal again, so a repeat there means nothing. A service manager is told READY, RELOADING and
STOPPING (`sdnotify.py`), and the pid file is written once the listeners are bound. SIGUSR1
reopens the log files (`logfiles.py`); `[global] user` is taken once everything privileged is
done (`privdrop.py`).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import anyio

from l4lb.accesslog import AccessLog
from l4lb.admin import admin_token, config_json, open_admin_listener, serve_admin
from l4lb.cachepurge import Purge, apply_purge, configured_caches
from l4lb.config import Address, Config, load
from l4lb.demo import start_demo_backends
from l4lb.errors import L4lbError, one_line
from l4lb.health.checker import watch_server
from l4lb.listener import Listener, open_listening_socket
from l4lb.pidfile import PidFile
from l4lb.plan import plan, summary
from l4lb.poller import close_poller
from l4lb.pool import Pool, Resolved, build_pools, resolve_addresses
from l4lb.privdrop import drop_privileges
from l4lb.relay import close_pipes
from l4lb.sdnotify import Notifier
from l4lb.server import Server
from l4lb.shared.limits import SharedClients, SharedRates
from l4lb.shared.segment import Segment
from l4lb.shared.servers import ServerSlots
from l4lb.stats import Stats
from l4lb.tls.build import listener_context, upstream_tls

__all__ = ["Runtime"]

log = logging.getLogger("l4lb")


class Runtime:
    def __init__(
        self,
        config: Config,
        access_log: AccessLog,
        *,
        reuse_port: bool = False,
        on_tick: Callable[[Runtime], None] | None = None,
        admin: bool = True,
        notifier: Notifier | None = None,
        pid_file: PidFile | None = None,
        hard_on_repeat: bool = True,
        worker: int | None = None,
        quic_fds: dict[str, int] | None = None,
        quic_channel: socket.socket | None = None,
        shared: Segment | None = None,
    ) -> None:
        """`reuse_port` binds listeners with SO_REUSEPORT (worker processes share ports);
        `on_tick(runtime)` runs once a second after the stats tick (a worker reports to its
        supervisor there); `admin=False` leaves the admin API to someone else; `notifier`
        tells systemd about readiness, reloads and stopping; `pid_file` is written once the
        listeners are bound; `hard_on_repeat=False` (a worker) ignores a repeated
        SIGTERM/SIGINT. `worker` and `quic_fds` (str(address) -> fd): a worker's index and
        its UDP sockets in the supervisor's steered groups (quic/steering.py), and
        `quic_channel` where more of them come when a reload adds an address; `shared` (a
        worker of several) is the instance's shared memory: active connections and health
        per server, client limits and rate limits."""
        self.config = config
        self.worker = worker
        self.quic_fds = quic_fds or {}
        self.quic_channel = quic_channel
        self.shared = shared
        self.shared_servers = ServerSlots(shared) if shared is not None else None
        self.shared_clients = SharedClients(shared) if shared is not None else None
        self.shared_rates = SharedRates(shared) if shared is not None else None
        self.access_log = access_log
        self.reuse_port = reuse_port
        self.on_tick = on_tick
        self.serve_admin = admin
        self.pools: dict[str, Pool] = {}
        self.listeners: dict[str, Listener] = {}
        self.retired: list[Listener] = []  # removed by a reload, draining their sessions
        self.sockets: dict[Address, socket.socket] = {}
        # HTTP/3: one QUIC endpoint (quic.endpoint.QuicEndpoint) per UDP address, kept across
        # reloads like the TCP sockets; retired ones finish their connections, then close.
        self.quic: dict[Address, Any] = {}
        self.quic_retired: list[Any] = []
        self.reloads = 0
        self.reload_attempts = 0  # finished reloads, applied or refused (`l4lb reload` waits)
        self.last_reload_error = ""
        self.notifier = notifier
        self.pid_file = pid_file
        self.hard_on_repeat = hard_on_repeat
        self.hard_stop = False
        self.stats: Stats | None = None
        # Drains set at run time (admin API, TUI) outlive reloads, as an operator expects.
        self.drain_overrides: dict[tuple[str, str], bool] = {}
        self.http_registry: Any = (
            None  # l7.engine.UpstreamRegistry, made with the first http listener
        )
        self._stop = anyio.Event()
        self._reloading = anyio.Lock()  # one reload at a time (SIGHUP and the admin API)
        self._tasks: Any = None  # the run's task group (a SIGHUP reload runs in it)
        self._health_scope: anyio.CancelScope | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until SIGTERM/SIGINT (or `stop()`), then drain and return."""
        self._loop = asyncio.get_running_loop()
        self.stats = Stats(anyio.current_time(), time.time())
        admin = await self._open_admin()
        demo = await start_demo_backends(self.config.demo) if self.config.demo else []
        try:
            self.apply(self.config)
            # Everything made so far lives as long as the process: keep it out of the
            # collector's way, so collections walk only what requests create.
            gc.collect()
            gc.freeze()
            for listener in self.listeners.values():
                binds = ", ".join(str(a) for a in listener.config.bind)
                log.info(
                    "listener %s: %s on %s -> pool %s",
                    listener.name,
                    listener.config.protocol,
                    binds,
                    listener.config.pool,
                )
            if self.pid_file is not None:
                self.pid_file.write()
            # Listeners bound, certificates loaded, pid file written: root is no longer needed.
            drop_privileges(self.config.settings.user, self.config.settings.group)
            if self.notifier is not None:
                self.notifier.ready(f"serving {len(self.listeners)} listener(s)")
            async with anyio.create_task_group() as tg:
                self._tasks = tg
                tg.start_soon(self._health_checks)
                tg.start_soon(self._housekeeping)
                tg.start_soon(self._signals)
                if admin is not None:
                    tg.start_soon(
                        partial(
                            serve_admin,
                            self,
                            self.stats,
                            "",
                            0,
                            self._admin_token(),
                            listener=admin,
                        )
                    )
                await self._stop.wait()
                if self.notifier is not None:
                    self.notifier.stopping()
                await self._drain()
                tg.cancel_scope.cancel()
        finally:
            for server in demo:
                server.close()
            if self.http_registry is not None:
                self.http_registry.close()
            for sock in self.sockets.values():
                sock.close()
            for endpoint in [*self.quic.values(), *self.quic_retired]:
                endpoint.close()
                endpoint.sock.close()
            close_pipes()
            close_poller(self._loop)
            self.access_log.flush()

    def stop(self, *, hard: bool = False) -> None:
        """Stop: drain (up to `drain_timeout`), or with `hard` close every connection now;
        a hard stop during a drain cuts the drain short."""
        self.hard_stop = self.hard_stop or hard
        self._stop.set()

    async def _open_admin(self) -> Any:
        """Bind the admin API before anything else starts (None: none, or a worker)."""
        return await open_admin_listener(self.config) if self.serve_admin else None

    def _admin_token(self) -> str | None:
        return admin_token(self.config)

    def set_draining(self, pool: str, server: str, draining: bool) -> Server | None:
        """Drain or enable a server now and across reloads (admin API, TUI)."""
        target = self.pools.get(pool)
        found = next((s for s in target.servers if s.name == server), None) if target else None
        if found is not None:
            found.draining = draining
            self.drain_overrides[(pool, server)] = draining
        return found

    @property
    def caches(self) -> dict[str, Any]:
        """The `[cache.NAME]` stores the running config's routes use, by name (stats, purge)."""
        registry = self.http_registry
        if registry is None:
            return {}
        found = registry.caches
        return {n: found[n] for n in configured_caches(self.config) if n in found}

    def purge_cache(self, purge: Purge) -> dict[str, Any]:
        """Apply an admin API purge (l4lb/cachepurge.py) here; responses removed per cache."""
        return {"caches": apply_purge(self.caches, purge)}

    async def _drain(self) -> None:
        """Stop accepting, let connections finish up to `drain_timeout`, then end the rest."""
        for listener in self.listeners.values():
            listener.stop()
        for sock in self.sockets.values():
            sock.close()
        self.sockets.clear()
        timeout = self.config.settings.drain_timeout
        for session in self._sessions():
            if session.http is not None:
                session.http.drain(min(1.0, timeout))
        for endpoint in [*self.quic.values(), *self.quic_retired]:
            endpoint.stop_accepting()
            endpoint.drain(min(1.0, timeout))
        live = self._sessions()
        if live:
            log.info("draining %d connection(s) for up to %gs", len(live), timeout)
        with anyio.move_on_after(timeout):
            while (self._sessions() or self._quic_connections()) and not self.hard_stop:
                await anyio.sleep(0.05)
        left = self._sessions()
        if left:
            why = "hard stop" if self.hard_stop else "drain deadline reached"
            log.warning("%s; closing %d connection(s)", why, len(left))
        for session in left:
            session.abort("shutdown")
        for listener in [*self.listeners.values(), *self.retired]:
            listener.cancel_tasks()
        for endpoint in [*self.quic.values(), *self.quic_retired]:
            endpoint.close()

    def _sessions(self) -> list:
        out = []
        for listener in [*self.listeners.values(), *self.retired]:
            out.extend(listener.sessions)
        return out

    # -- config ------------------------------------------------------------------------------

    def apply(self, config: Config, resolved: Resolved | None = None) -> None:
        """Swap to `config` in one step. Raises L4lbError (and changes nothing) if a new
        address cannot be bound. `resolved`: the server addresses, looked up beforehand
        (`reload` does it in a thread); without it, what loading the config found, and the
        rest is looked up here, blocking."""
        loop = self._loop
        assert loop is not None
        opened: dict[Address, socket.socket] = {}
        wanted: dict[Address, socket.socket] = {}
        try:
            for lc in config.listeners:
                for addr in lc.bind:
                    sock = self.sockets.get(addr)
                    if sock is None:
                        sock = opened[addr] = open_listening_socket(
                            addr, lc.backlog, reuse_port=self.reuse_port
                        )
                    wanted[addr] = sock
        except OSError as exc:
            for sock in opened.values():
                sock.close()
            raise L4lbError(f"cannot listen on {addr}: {exc.strerror or exc}") from None
        quic_opened: dict[Address, socket.socket] = {}
        try:
            tls_contexts = {
                lc.name: listener_context(lc)
                for lc in config.listeners
                if lc.protocol in ("tls", "https")
            }
            upstream = {pc.name: u for pc in config.pools if (u := upstream_tls(pc)) is not None}
            quic_wanted = self._quic_sockets(config, quic_opened)
        except L4lbError:
            for sock in [*opened.values(), *quic_opened.values()]:
                sock.close()
            raise
        previous = {(s.pool, s.name): s for p in self.pools.values() for s in p.servers}
        pools = build_pools(config.pools, previous, loop.time(), resolved or config.resolved)
        live = {(p.name, s.name): s for p in pools.values() for s in p.servers}
        if self.shared_servers is not None:
            self.shared_servers.bind(pools.values(), loop.time())
        self.drain_overrides = {k: v for k, v in self.drain_overrides.items() if k in live}
        for key, draining in self.drain_overrides.items():
            live[key].draining = draining
        # Unregister every listening socket, then register them again under the new config.
        # Both happen in this one synchronous step, so clients that arrive meanwhile wait in
        # the kernel's backlog: none is refused.
        for listener in self.listeners.values():
            listener.stop()
        listeners: dict[str, Listener] = {}
        for lc in config.listeners:
            socks = [wanted[a] for a in lc.bind]
            listener = self.listeners.pop(lc.name, None)
            if listener is None:
                listener = Listener(loop, lc, pools, socks, self.access_log)
                listener.clients = self.shared_clients
            listener.sockets = socks
            listener.tls_context = tls_contexts.get(lc.name)
            listener.stats = self.stats
            if lc.protocol in ("http", "https"):
                listener.engine = self._http_engine(lc, pools, upstream)
                listener.engine.listener = listener
            listener.upstream_tls = upstream
            listener.update(lc, pools)
            listener.start()
            listeners[lc.name] = listener
        self._quic_endpoints(quic_wanted, quic_opened, listeners)
        self.retired.extend(self.listeners.values())
        for addr, sock in self.sockets.items():
            if addr not in wanted:
                sock.close()
        self.listeners = listeners
        self.sockets = wanted
        if self.http_registry is not None:
            self.http_registry.retain(
                {(p.name, s.name, s.host, s.port) for p in pools.values() for s in p.servers}
            )
        self.pools = pools
        self.config = config
        if self._health_scope is not None:
            self._health_scope.cancel()  # restart checks on the new pools

    def _quic_sockets(
        self, config: Config, opened: dict[Address, socket.socket]
    ) -> dict[Address, tuple[str, Any]]:
        """Bind the UDP sockets of listeners with `http3 = true` not bound yet (into
        `opened`) and build their QUIC settings: address -> (listener name, settings).
        quic/ and aioquic are imported only here (DESIGN.md). Raises L4lbError."""
        wanted: dict[Address, tuple[str, Any]] = {}
        h3 = [lc for lc in config.listeners if lc.protocol == "https" and lc.http.http3]
        if not h3:
            return wanted
        try:
            from quic.endpoint import open_udp_socket
            from quic.settings import quic_settings
        except ImportError as exc:
            raise L4lbError(
                f"listener {h3[0].name}: http3 = true needs aioquic ({exc}): "
                "pip install aioquic, or set http3 = false"
            ) from None
        if self.quic_channel is not None:  # sent before the reload signal (supervisor.py)
            from quic.steering import received_group_sockets

            for addr, fd in received_group_sockets(self.quic_channel).items():
                if addr in self.quic_fds:
                    os.close(self.quic_fds[addr])
                self.quic_fds[addr] = fd
        for lc in h3:
            settings = quic_settings(lc)
            for addr in lc.bind:
                fd = self.quic_fds.get(str(addr))
                if addr not in self.quic and fd is not None:  # the supervisor's, steered
                    opened[addr] = socket.socket(fileno=os.dup(fd))  # (dup: ours to close)
                    opened[addr].setblocking(False)
                elif addr not in self.quic:
                    try:
                        opened[addr] = open_udp_socket(addr, reuse_port=self.reuse_port)
                    except OSError as exc:
                        raise L4lbError(
                            f"listener {lc.name}: cannot listen on {addr} (UDP, HTTP/3): "
                            f"{exc.strerror or exc}"
                        ) from None
                wanted[addr] = (lc.name, settings)
        return wanted

    def _quic_endpoints(
        self,
        wanted: dict[Address, tuple[str, Any]],
        opened: dict[Address, socket.socket],
        listeners: dict[str, Listener],
    ) -> None:
        """Point kept endpoints at their reloaded listener, start new ones, retire the rest."""
        loop = self._loop
        endpoints: dict[Address, Any] = {}
        for addr, (name, settings) in wanted.items():
            endpoint = self.quic.pop(addr, None)
            if endpoint is None:
                from quic.endpoint import QuicEndpoint

                steered = self.worker if str(addr) in self.quic_fds else None
                endpoint = QuicEndpoint(loop, opened[addr], listeners[name], settings, steered)
            else:
                endpoint.update(listeners[name], settings)
            endpoint.start()
            endpoints[addr] = endpoint
        for endpoint in self.quic.values():
            endpoint.stop_accepting()
            endpoint.drain(min(1.0, self.config.settings.drain_timeout))
            self.quic_retired.append(endpoint)
        self.quic = endpoints
        kept = {str(addr) for addr in wanted}  # the supervisor closed its copies of the rest
        for addr in [a for a in self.quic_fds if a not in kept]:
            os.close(self.quic_fds.pop(addr))  # (an endpoint holds a dup of its own)

    def _quic_connections(self) -> int:
        return sum(len(e.connections) for e in [*self.quic.values(), *self.quic_retired])

    def _http_engine(self, lc: Any, pools: dict[str, Pool], upstream: dict) -> Any:
        """l7 is imported only when a config has an http(s) listener (DESIGN.md)."""
        from l7.engine import HttpEngine, UpstreamRegistry

        if self.http_registry is None:
            assert self._loop is not None
            self.http_registry = UpstreamRegistry(self._loop)
            self.http_registry.limiters.shared = self.shared_rates
        return HttpEngine(lc, pools, self.http_registry, upstream, self.access_log, self.stats)

    async def reload(self) -> bool:
        """Re-read the config file; keep the running config on any error. True if applied.
        Server names are resolved in a worker thread (DNS can take seconds, and the loop
        serves every connection meanwhile); the swap itself is one step on the loop. The
        service manager is told RELOADING, then READY with the outcome."""
        async with self._reloading:
            return await self._reload()

    async def _reload(self) -> bool:
        if self.notifier is not None:
            self.notifier.reloading(time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)
        try:
            # Loading checks that every name resolves: in the thread too, with the lookup.
            config, resolved = await anyio.to_thread.run_sync(_load_resolved, self.config.file)
            changes = summary(plan(config_json(self.config), config_json(config)))
            self.apply(config, resolved)
        except L4lbError as exc:
            log.error("reload failed; still running the previous config: %s", one_line(exc))
            self.last_reload_error = str(exc)
            self.reload_attempts += 1
            first = str(exc).split("\n")[0]
            if self.stats is not None and self._loop is not None:
                self.stats.event(self._loop.time(), "reload_failed", first)
            if self.notifier is not None:
                self.notifier.ready(f"reload refused, previous config kept: {first}")
            return False
        self.last_reload_error = ""
        self.reloads += 1
        self.reload_attempts += 1
        log.info("reload %d applied from %s: %s", self.reloads, config.file, changes)
        if self.notifier is not None:
            self.notifier.ready(f"reload {self.reloads} applied")
        return True

    # -- tasks -------------------------------------------------------------------------------

    async def _health_checks(self) -> None:
        if self.shared_servers is not None and not self.shared_servers.checks:
            return  # worker 0 probes for the instance; housekeeping reads its results
        while True:
            async with anyio.create_task_group() as tg:
                self._health_scope = tg.cancel_scope
                for pool in self.pools.values():
                    if pool.config.health is None:
                        continue
                    for server in pool.servers:
                        tg.start_soon(watch_server, server, pool.config.health)
                await anyio.sleep_forever()

    async def _housekeeping(self) -> None:
        """Idle sweeps once a second; access-log flushes, and in workers but 0 the health
        worker 0 published, four times a second."""
        tick = 0
        while True:
            await anyio.sleep(0.25)
            self.access_log.flush()
            shared = self.shared_servers
            if shared is not None and not shared.checks:
                shared.pull(self.pools.values(), self._now())
            tick += 1
            if tick % 4 == 0:
                now = anyio.current_time()
                for listener in [*self.listeners.values(), *self.retired]:
                    listener.sweep(now)
                if self.stats is not None:
                    self.stats.tick(self, now)
                if self.on_tick is not None:
                    self.on_tick(self)
                self.retired = [r for r in self.retired if r.sessions]
                for endpoint in [e for e in self.quic_retired if not e.connections]:
                    endpoint.close()
                    endpoint.sock.close()
                    self.quic_retired.remove(endpoint)

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    async def _signals(self) -> None:
        signums = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1)
        with anyio.open_signal_receiver(*signums) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if signum == signal.SIGUSR1:  # logrotate's postrotate, as nginx's USR1
                    self.access_log.reopen()
                    log.info("SIGUSR1: log files reopened")
                elif signum == signal.SIGHUP:
                    log.info("SIGHUP: reloading %s", self.config.file)
                    self._tasks.start_soon(self.reload)  # a SIGTERM need not wait for DNS
                elif signum == signal.SIGQUIT or (self._stop.is_set() and self.hard_on_repeat):
                    if not self.hard_stop:
                        log.info("%s: stopping now, closing every connection", name)
                    self.stop(hard=True)
                elif not self._stop.is_set():
                    log.info("%s: shutting down (again, or SIGQUIT, to stop at once)", name)
                    self.stop()
                else:
                    log.info("%s again: still draining (SIGQUIT stops at once)", name)


def _load_resolved(file: str) -> tuple[Config, Resolved]:
    """Load and validate `file`, then resolve its servers' names (blocking: run in a thread)."""
    config = load(file)
    return config, resolve_addresses(config.pools, config.resolved)
