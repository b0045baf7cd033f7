"""Multi-core: the supervisor of N worker processes sharing each port (SO_REUSEPORT).

Process model. With `global.workers` above 1, `l4lb up` becomes a supervisor that proxies
nothing itself. It starts N workers, each a full proxy: a `Runtime` that binds every listener
with SO_REUSEPORT (the kernel spreads new connections over the workers by a hash of the
4-tuple), balances, runs passive ejection, and reloads on SIGHUP. Before starting them the
supervisor makes the instance's shared memory (`l4lb.shared`): active connections and health
per server, per-client connection counts and rate state, route rate limits. Worker 0 runs
the health checks for all (docs/WORKERS.md says what is shared and what stays per worker).
The supervisor:
- validates the config (and builds the TLS contexts, which writes a missing self-signed
  certificate once) before any worker starts, and starts the demo backends (so they outlive
  any worker's crash);
- serves the admin API, merging the workers' stats (`reports.py`, `cluster.py`) into one
  snapshot;
- restarts a worker that dies, with a growing delay for quick deaths (`cluster.Backoff`);
- forwards signals: SIGHUP validates first and then signals every worker, each of which
  reloads in-process (hitless: kept listening sockets stay open); SIGTERM/SIGINT signal every
  worker, wait for them to drain (`drain_timeout` plus `EXIT_MARGIN`), and exit 0; SIGUSR1
  (log reopen) is forwarded to every worker that serves. A second
  SIGTERM/SIGINT, or SIGQUIT, sends SIGQUIT to every worker: they close their connections at
  once (a worker ignores a repeated SIGTERM, which systemd's and the terminal's signalling
  of the whole group would otherwise turn into a hard stop);
- tells systemd READY once every worker has reported (and writes the pid file then), and
  after a reload READY again once every worker has reported the outcome of its own reload
  (`reload_attempts` in its report), with a STATUS naming any worker that refused it. The
  workers do not inherit $NOTIFY_SOCKET.

Why `subprocess.Popen([sys.executable, "-m", "l4lb", "worker", ...])` and not
`multiprocessing`: forking after an event loop, uvloop or OpenSSL has started is unsafe, so
it would be the spawn method anyway, which re-imports the parent's main module, pickles the
arguments and adds a resource-tracker process. A worker started by a command line is an
ordinary process: the same entry point and logging setup as `l4lb up`, visible as
`l4lb worker` in `ps`, and easy to kill in a test.

Channels, one per worker:
- stdin: the config text the supervisor validated, then EOF. A worker restarted after a
  crash runs the config the others run, even if the file was edited since without a reload.
- a socketpair passed with `pass_fds` (`--control-fd`): the worker writes one JSON report a
  second (see `reports.py` for the format); the supervisor writes commands, one JSON object a
  line: `{"cmd": "drain", "pool": P, "server": S, "draining": true|false}`, or
  `{"cmd": "purge", "id": N, "purge": {...}}`, which the worker answers on its report channel
  with `{"reply": N, "caches": {NAME: removed}}` (`purge_cache`). End of file tells
  each side the other is gone: a worker whose supervisor was killed drains and exits.
- stdout and stderr are the supervisor's (access log and event log; each log line says
  `worker N:`), or /dev/null when the supervisor shows the live view without `--log-file`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any

import anyio

from l4lb.admin import admin_token, config_json, open_admin_listener, serve_admin
from l4lb.cachepurge import Fanout, Purge, configured_caches
from l4lb.cluster import Backoff, ClusterStats, reload_outcome
from l4lb.config import Config, load, load_text
from l4lb.demo import start_demo_backends
from l4lb.errors import L4lbError, one_line
from l4lb.pidfile import PidFile
from l4lb.plan import plan, summary
from l4lb.sdnotify import Notifier
from l4lb.shared.segment import Segment
from l4lb.tls.build import listener_context, upstream_tls

__all__ = ["EXIT_MARGIN", "Supervisor", "check_config"]

log = logging.getLogger("l4lb")

EXIT_MARGIN = 5.0  # seconds a worker gets beyond drain_timeout to exit before SIGKILL
REPORT_LIMIT = 256 * 1024 * 1024  # longest report line accepted
REAP_INTERVAL = 0.05
PURGE_TIMEOUT = 5.0  # seconds the workers get to answer a cache purge


def check_config(config: Config) -> None:
    """What a worker would find wrong at start beyond the config's syntax: every certificate
    loads (missing self-signed ones are written, once, here) and every upstream TLS context
    builds. Raises L4lbError."""
    for lc in config.listeners:
        if lc.certs:
            listener_context(lc)
    for pc in config.pools:
        upstream_tls(pc)


def _probe(config: Config) -> None:
    """Fail before any worker starts if a listener's address is taken. The probe binds
    without SO_REUSEPORT, so it also catches another l4lb sharing the port, which the
    workers' SO_REUSEPORT binds would silently join."""
    for lc in config.listeners:
        for addr in lc.bind:
            family = socket.AF_INET6 if ":" in addr.host else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    sock.bind((addr.host, addr.port))
                except OSError as exc:
                    raise L4lbError(f"cannot listen on {addr}: {exc.strerror or exc}") from None


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen[bytes]
    writer: asyncio.StreamWriter
    reader: asyncio.StreamReader
    generation: int  # the supervisor's `reloads` when it was started or last signalled
    started: float
    quic_channel: socket.socket  # sockets of steered groups a reload adds (quic/steering.py)
    quic_addrs: set[str]  # the steered groups it has its socket of
    serving: bool = False  # it has sent a report

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


class _ServerView:
    """Enough of a `Server` for the admin API's drain/enable answers, read through to the
    supervisor's overrides and merged snapshot."""

    def __init__(self, sup: Supervisor, pool: str, name: str, drain: bool) -> None:
        self._sup, self.pool, self.name, self._drain = sup, pool, name, drain

    @property
    def draining(self) -> bool:
        return self._sup.drain_overrides.get((self.pool, self.name), self._drain)

    def _merged(self) -> dict[str, Any]:
        stats = self._sup.stats
        if stats is None:
            return {}
        snap = stats.snapshot(self._sup, anyio.current_time())
        for pool in snap["pools"]:
            for server in pool["servers"] if pool["name"] == self.pool else ():
                if server["name"] == self.name:
                    return server
        return {}

    @property
    def active(self) -> int:
        return int(self._merged().get("active", 0))

    def state(self, now: float) -> str:
        """As `Server.state`: draining first, then down; the workers' reports lag a second."""
        if self.draining:
            return "draining"
        merged = self._merged()
        if not merged.get("up", True):
            return "down"
        state = merged.get("state", "up")
        return "up" if state == "draining" else state


@dataclass
class _PoolView:
    name: str
    servers: list[_ServerView]


class Supervisor:
    """The parent of the workers. Shaped like `Runtime` where the admin API and the live view
    use it: `run()`, `stop()`, `reload()`, `set_draining()`, `config`, `pools`, `reloads`,
    `last_reload_error`, `stats`."""

    def __init__(
        self,
        file: str,
        count: int,
        *,
        worker_args: Sequence[str] = (),
        quiet: bool = False,
        notifier: Notifier | None = None,
        pid_file: PidFile | None = None,
        reopen: Callable[[], None] | None = None,
    ) -> None:
        """`count` workers for the config in `file`. `worker_args` go to every `l4lb worker`
        (log options); `quiet` sends the workers' output to /dev/null (the live view owns the
        terminal); `notifier` and `pid_file` as for `Runtime`. Raises ConfigErrors if the
        file does not validate. `reopen` reopens this process's log files (SIGUSR1)."""
        self.text, self.config = _read(file)
        self.reopen = reopen
        self.count = count
        self.worker_args = tuple(worker_args)
        self.quiet = quiet
        self.reloads = 0
        self.reload_attempts = 0  # reloads whose outcome is known (every worker reported)
        self.reloading = False
        self.last_reload_error = ""
        self.notifier = notifier
        self.segment: Segment | None = None  # the workers' shared memory, made by `run`
        self.pid_file = pid_file
        self._hard = False
        self._signalled: dict[int, tuple[int, int]] = {}  # index -> (pid, reload_attempts)
        self.stats: ClusterStats | None = None
        self.drain_overrides: dict[tuple[str, str], bool] = {}
        self._workers: dict[int, _Worker] = {}
        self._ready = False  # every worker has reported once since start
        self._stopping = False
        self._failure = ""
        self._stop = anyio.Event()
        self._purges: dict[int, tuple[Fanout, anyio.Event]] = {}  # id -> purge in flight
        self._purge_ids = 0
        self._quic_groups: dict[str, list[socket.socket]] = {}  # quic/steering.py

    # -- the runtime-like surface ---------------------------------------------------------------

    @property
    def pools(self) -> dict[str, _PoolView]:
        out = {}
        for pc in self.config.pools:
            servers = [_ServerView(self, pc.name, s.name, s.drain) for s in pc.servers]
            out[pc.name] = _PoolView(pc.name, servers)
        return out

    def stop(self) -> None:
        self._stop.set()

    def reload(self) -> bool:
        """Validate the config file here, then SIGHUP every worker; on any error keep
        everything as it is. True if the workers were signalled. Each worker reloads on its
        own and logs `reload N applied` (or why not); `reloading` stays True until each has
        reported its outcome."""
        if self.notifier is not None:
            self.notifier.reloading(time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)
        try:
            text, config = _read(self.config.file)
            check_config(config)
            added = self._steer_new_addresses(config)
        except L4lbError as exc:
            log.error("reload failed; still running the previous config: %s", one_line(exc))
            self.last_reload_error = str(exc)
            if self.stats is not None:
                first = str(exc).split("\n")[0]
                self.stats.event(anyio.current_time(), "reload_failed", first)
            self.reload_attempts += 1
            if self.notifier is not None:
                self.notifier.ready(f"reload refused, previous config kept: {first}")
            return False
        changes = summary(plan(config_json(self.config), config_json(config)))
        self.text, self.config = text, config
        self.last_reload_error = ""
        self.reloads += 1
        servers = {(p.name, s.name) for p in config.pools for s in p.servers}
        self.drain_overrides = {k: v for k, v in self.drain_overrides.items() if k in servers}
        serving = [w for w in self._workers.values() if w.serving and w.alive]
        self._signalled = {w.index: (w.proc.pid, self._worker_reloads(w.index)) for w in serving}
        self.reloading = True
        self._hand_over_groups(config, added, serving)
        for worker in serving:
            _signal(worker, signal.SIGHUP)
            worker.generation = self.reloads
        log.info(
            "reload %d validated; SIGHUP sent to %d worker(s): %s",
            self.reloads,
            len(serving),
            changes,
        )
        if self.stats is not None:
            now = anyio.current_time()
            self.stats.reloaded(now, {lc.name for lc in config.listeners}, servers)
            self.stats.event(now, "reload", f"reload {self.reloads} sent to the workers")
        self._check_reload()
        return True

    def _steer_new_addresses(self, config: Config) -> dict[str, list[socket.socket]]:
        """The steered UDP groups of HTTP/3 addresses that `config` adds (quic/steering.py).
        Raises L4lbError if one cannot be bound."""
        if not any(lc.protocol == "https" and lc.http.http3 for lc in config.listeners):
            return {}
        from quic.steering import steered_groups

        return steered_groups(config, self.count, frozenset(self._quic_groups))

    def _hand_over_groups(
        self, config: Config, added: dict[str, list[socket.socket]], serving: list[_Worker]
    ) -> None:
        """Before the reload signal: give each worker its socket of the groups it lacks;
        close the groups of addresses `config` no longer has."""
        self._quic_groups.update(added)
        if not self._quic_groups:
            return
        from quic.steering import send_group_socket, steered_addresses

        kept = steered_addresses(config)
        for addr in [a for a in self._quic_groups if a not in kept]:
            for sock in self._quic_groups.pop(addr):
                sock.close()
        for worker in serving:
            worker.quic_addrs &= kept
            for addr, group in self._quic_groups.items():
                missing = addr not in worker.quic_addrs
                if missing and send_group_socket(worker.quic_channel, addr, group[worker.index]):
                    worker.quic_addrs.add(addr)

    def _worker_reloads(self, index: int) -> int:
        """The `reload_attempts` worker `index` last reported (-1: no report yet)."""
        report = self.stats.report_of(index) if self.stats is not None else None
        config = (report or {}).get("snapshot", {}).get("config", {})
        return int(config.get("reload_attempts", -1))

    def _check_reload(self) -> None:
        """Once every signalled worker has reported its reload (or died), the reload is done:
        say so to the service manager and in `/status`."""
        if not self.reloading:
            return
        alive = {w.index: w for w in self._workers.values() if w.alive}
        assert self.stats is not None
        reports = {i: (w.proc.pid, self.stats.report_of(i)) for i, w in alive.items()}
        errors = reload_outcome(self._signalled, reports)
        if errors is None:
            return
        self.reloading = False
        self.reload_attempts += 1
        self.last_reload_error = "\n".join(errors)
        if errors:
            log.error("reload %d refused by %d worker(s)", self.reloads, len(errors))
        if self.notifier is not None:
            first = errors[0].split("\n")[0] if errors else ""
            status = f"reload refused: {first}" if errors else f"reload {self.reloads} applied"
            self.notifier.ready(status)

    def set_draining(self, pool: str, server: str, draining: bool) -> _ServerView | None:
        """Drain or enable a server in every worker, now and in workers started later."""
        target = self.pools.get(pool)
        found = next((s for s in target.servers if s.name == server), None) if target else None
        if found is None:
            return None
        self.drain_overrides[(pool, server)] = draining
        line = {"cmd": "drain", "pool": pool, "server": server, "draining": draining}
        for worker in self._workers.values():
            if worker.serving:
                _send(worker, line)
        return found

    async def purge_cache(self, purge: Purge) -> dict[str, Any]:
        """Send a cache purge to every serving worker and sum their answers (each worker has
        its own memory store); `unanswered` lists those silent after PURGE_TIMEOUT."""
        self._purge_ids += 1
        ident = self._purge_ids
        asked = [w for w in self._workers.values() if w.serving and w.alive]
        fanout = Fanout(purge, [w.index for w in asked], configured_caches(self.config))
        self._purges[ident] = (fanout, anyio.Event())
        for worker in asked:
            _send(worker, {"cmd": "purge", "id": ident, "purge": purge.json()})
        try:
            with anyio.move_on_after(PURGE_TIMEOUT):
                while not fanout.done:
                    await self._purges[ident][1].wait()
        finally:
            del self._purges[ident]
        return fanout.result()

    def _purge_answer(self, index: int, reply: dict[str, Any] | None) -> None:
        """Worker `index` answered purge `reply["reply"]` (None: it exited)."""
        for ident, (fanout, event) in list(self._purges.items()):
            if reply is None:
                fanout.gone(index)
            elif reply.get("reply") == ident:
                fanout.answer(index, reply)
            else:
                continue
            if fanout.done:
                event.set()

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Start the workers and supervise them until SIGTERM/SIGINT (or `stop()`); then stop
        them, waiting for them to drain. Raises L4lbError if the instance cannot start."""
        _probe(self.config)
        check_config(self.config)
        if any(lc.protocol == "https" and lc.http.http3 for lc in self.config.listeners):
            from quic.steering import steered_groups  # HTTP/3: workers steered by CID

            self._quic_groups = steered_groups(self.config, self.count)
        self.stats = ClusterStats(anyio.current_time(), time.time())
        self.segment = Segment.create(self.count)
        admin = await self._open_admin()
        demo = await start_demo_backends(self.config.demo) if self.config.demo else []
        log.info("starting %d workers (pid %d supervises)", self.count, os.getpid())
        try:
            async with anyio.create_task_group() as tg:
                for index in range(self.count):
                    tg.start_soon(self._supervise, index)
                tg.start_soon(self._signals)
                if admin is not None:
                    token = self._admin_token()
                    serve = partial(serve_admin, self, self.stats, "", 0, token, listener=admin)
                    tg.start_soon(serve)
                await self._stop.wait()
                if self.notifier is not None:
                    self.notifier.stopping()
                await self._shutdown()
                tg.cancel_scope.cancel()
        finally:
            for group in self._quic_groups.values():
                for sock in group:
                    sock.close()
            for server in demo:
                server.close()
            for worker in self._workers.values():
                if worker.alive:  # one started during shutdown, or a bug: leave none behind
                    worker.proc.kill()
                    worker.proc.wait()
                worker.writer.close()
                worker.quic_channel.close()
            if self.segment is not None:
                self.segment.close()
        if self._failure:
            raise L4lbError(self._failure)

    async def _open_admin(self) -> Any:
        return await open_admin_listener(self.config)

    def _admin_token(self) -> str | None:
        return admin_token(self.config)

    async def _supervise(self, index: int) -> None:
        """Keep worker `index` running until shutdown."""
        backoff = Backoff()
        while not self._stopping:
            worker = await self._spawn(index)
            if worker is not None:
                await self._read_reports(worker)
                while worker.alive:
                    await anyio.sleep(REAP_INTERVAL)
                assert self.stats is not None
                self.stats.exited(index)
                assert self.segment is not None
                self.segment.forget(index)  # what it counted went with it
                self._check_reload()
                how = _how(worker.proc.returncode)
                pid = worker.proc.pid
            else:
                how, pid = "could not be started", 0
            if self._stopping:
                log.info("worker %d (pid %d) %s", index, pid, how)
                return
            if not self._ready and not (worker and worker.serving):
                self._failure = f"worker {index} {how} before serving; see its log above"
                log.error("%s; stopping", self._failure)
                self.stop()
                return
            now = anyio.current_time()
            delay = backoff.delay(worker.started if worker else now, now)
            log.warning("worker %d (pid %d) %s; restarting in %.1fs", index, pid, how, delay)
            assert self.stats is not None
            self.stats.event(now, "worker_exit", f"worker {index} (pid {pid}) {how}")
            await anyio.sleep(delay)

    async def _spawn(self, index: int) -> _Worker | None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        args = [sys.executable, "-m", "l4lb", "worker", self.config.file, "--index", str(index)]
        assert self.segment is not None
        shared = self.segment.fd
        args += ["--control-fd", str(theirs.fileno()), "--shared-fd", str(shared)]
        args += self.worker_args
        quic_fds = [(addr, group[index].fileno()) for addr, group in self._quic_groups.items()]
        for addr, fd in quic_fds:  # this worker's place in each steered UDP group
            args += ["--quic-socket", f"{addr}={fd}"]
        quic_ours, quic_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        quic_ours.setblocking(False)
        args += ["--quic-channel", str(quic_theirs.fileno())]
        out = subprocess.DEVNULL if self.quiet else None
        env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}  # ours to use
        env["PYTHONHASHSEED"] = str(self.segment.seed)  # keys hash alike in every worker
        try:
            proc = subprocess.Popen(
                args,
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=out,
                pass_fds=[theirs.fileno(), shared, quic_theirs.fileno(), *(f for _, f in quic_fds)],
                env=env,
            )
        except OSError as exc:
            log.error("worker %d: cannot start %s: %s", index, sys.executable, exc)
            ours.close()
            quic_ours.close()
            return None
        finally:
            theirs.close()
            quic_theirs.close()
        assert proc.stdin is not None
        await anyio.to_thread.run_sync(_feed, proc.stdin, self.text)
        reader, writer = await asyncio.open_unix_connection(sock=ours, limit=REPORT_LIMIT)
        started = anyio.current_time()
        quic_addrs = {addr for addr, _ in quic_fds}
        worker = _Worker(index, proc, writer, reader, self.reloads, started, quic_ours, quic_addrs)
        self._workers[index] = worker
        assert self.stats is not None
        self.stats.started_worker(index, proc.pid, worker.started)
        log.info("worker %d started (pid %d)", index, proc.pid)
        return worker

    async def _read_reports(self, worker: _Worker) -> None:
        """Take the worker's reports until it closes the channel (it exited)."""
        assert self.stats is not None
        while True:
            try:
                line = await worker.reader.readline()
            except ValueError as exc:  # a line over REPORT_LIMIT, dropped
                log.warning("worker %d: unreadable report: %s", worker.index, exc)
                continue
            except OSError:
                line = b""  # the channel broke: the worker is gone or going
            if not line:
                worker.writer.close()
                worker.quic_channel.close()
                self._purge_answer(worker.index, None)
                return
            try:
                report = json.loads(line)
            except ValueError:
                log.warning("worker %d: report is not JSON", worker.index)
                continue
            if "reply" in report:  # an answer to a command (purge_cache), not a report
                self._purge_answer(worker.index, report)
                continue
            self.stats.update(worker.index, report, anyio.current_time())
            if not worker.serving:
                self._serving(worker)
            self._check_reload()

    def _serving(self, worker: _Worker) -> None:
        """A worker's first report: it has bound its listeners and handles signals."""
        worker.serving = True
        for (pool, server), draining in self.drain_overrides.items():
            _send(worker, {"cmd": "drain", "pool": pool, "server": server, "draining": draining})
        # A reload came while it was starting (compared by count, not text: the change may
        # be in an included file).
        if worker.generation != self.reloads:
            _signal(worker, signal.SIGHUP)
            worker.generation = self.reloads
        everyone = len(self._workers) == self.count
        if not self._ready and everyone and all(w.serving for w in self._workers.values()):
            self._ready = True
            log.info("all %d workers serving", self.count)
            if self.pid_file is not None:
                try:
                    self.pid_file.write()
                except L4lbError as exc:
                    log.error("%s", exc)
            if self.notifier is not None:
                self.notifier.ready(f"{self.count} workers serving")

    async def _signals(self) -> None:
        signums = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1)
        with anyio.open_signal_receiver(*signums) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if signum == signal.SIGUSR1:  # reopen logs here and in every worker
                    if self.reopen is not None:
                        self.reopen()
                    for worker in self._workers.values():
                        if worker.serving and worker.alive:
                            _signal(worker, signal.SIGUSR1)
                    log.info("SIGUSR1: log files reopened; forwarded to the workers")
                elif signum == signal.SIGHUP:
                    log.info("SIGHUP: validating %s", self.config.file)
                    self.reload()
                elif signum == signal.SIGQUIT or self._stop.is_set():
                    if not self._hard:
                        log.info("%s: stopping the workers now (SIGQUIT)", name)
                    self._hard = True
                    for worker in self._workers.values():
                        if worker.alive:
                            _signal(worker, signal.SIGQUIT)
                    self.stop()
                else:
                    log.info("%s: stopping the workers (again, or SIGQUIT, to stop at once)", name)
                    self.stop()

    async def _shutdown(self) -> None:
        """SIGTERM every worker, wait for them to drain, SIGKILL what is left."""
        self._stopping = True
        live = [w for w in self._workers.values() if w.alive]
        for worker in live:
            _signal(worker, signal.SIGQUIT if self._hard else signal.SIGTERM)
        deadline = self.config.settings.drain_timeout + EXIT_MARGIN
        with anyio.move_on_after(deadline):
            while any(w.alive for w in live):
                await anyio.sleep(REAP_INTERVAL)
        for worker in live:
            if worker.alive:
                log.warning(
                    "worker %d (pid %d) did not exit in %gs; killing it",
                    worker.index,
                    worker.proc.pid,
                    deadline,
                )
                worker.proc.kill()
                worker.proc.wait()


def _read(file: str) -> tuple[str, Config]:
    """The text of `file` and the config it validates into. Raises ConfigErrors."""
    try:
        text = Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        load(file)  # raises the error a single process would report
        raise
    return text, load_text(text, file)


def _feed(pipe: IO[bytes], text: str) -> None:
    try:
        pipe.write(text.encode())
        pipe.close()
    except OSError:  # the worker died before reading its config; the reaper will see it
        pass


def _send(worker: _Worker, command: dict[str, Any]) -> None:
    if not worker.writer.is_closing():
        worker.writer.write(json.dumps(command).encode() + b"\n")


def _signal(worker: _Worker, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        worker.proc.send_signal(signum)


def _how(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        return f"was killed by {signal.Signals(-returncode).name}"
    return f"exited with status {returncode}"
