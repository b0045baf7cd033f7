"""The worker side of `supervisor.py`: one process of a multi-worker instance.

A worker is a whole `Runtime` (listeners on SO_REUSEPORT sockets, pools, balancers, health
checks, reload on SIGHUP, drain on SIGTERM) without the admin API and the demo backends,
which the supervisor serves. What the workers share (active connections and health per
server, client limits, rate limits) is in the memory segment the supervisor made
(`l4lb.shared`); only worker 0 runs the health checks. Once a second it writes its report
(`reports.py`) on the control socket it inherited; it reads the supervisor's commands from
the same socket, and stops, draining, when the supervisor goes away.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import socket

import anyio

from l4lb.accesslog import AccessLog
from l4lb.cachepurge import Purge
from l4lb.config import Config
from l4lb.reports import histogram_report
from l4lb.runtime import Runtime
from l4lb.shared.segment import Segment

__all__ = ["MAX_UNSENT", "WorkerTag", "serve_worker"]

log = logging.getLogger("l4lb")

MAX_UNSENT = 4 * 1024 * 1024  # a worker skips reports while this much is still unsent


class WorkerTag(logging.Filter):
    """Prefixes a worker's log lines with `worker N:`, so the shared log says who spoke."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.prefix = f"worker {index}: "

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and not record.msg.startswith(self.prefix):
            record.msg = self.prefix + record.msg
        return True


async def serve_worker(
    config: Config,
    access_log: AccessLog,
    index: int,
    control_fd: int,
    quic_fds: dict[str, int] | None = None,
    shared_fd: int = -1,
    quic_channel: int = -1,
) -> None:
    """Run one worker until SIGTERM/SIGINT or until its supervisor goes away: a `Runtime`
    on SO_REUSEPORT listeners, without the admin API (the supervisor serves it) or the demo
    backends (the supervisor runs them), reporting its stats once a second. `quic_fds`:
    address -> this worker's UDP socket in the supervisor's steered group (quic/steering.py);
    `shared_fd` is the instance's shared memory (`l4lb.shared`), -1 for none;
    `quic_channel` the socket on which the supervisor sends the steered sockets of HTTP/3
    addresses a reload adds, -1 for none. Raises L4lbError if it is not usable."""
    shared = Segment.attach(shared_fd, index) if shared_fd >= 0 else None
    control = socket.socket(fileno=control_fd)
    reader, writer = await asyncio.open_unix_connection(sock=control)

    def report(runtime: Runtime) -> None:
        stats = runtime.stats
        if stats is None or writer.is_closing():
            return
        if writer.transport.get_write_buffer_size() > MAX_UNSENT:
            return  # the supervisor is not reading; the next report will do
        now = anyio.current_time()
        line = {
            "worker": index,
            "pid": os.getpid(),
            "snapshot": stats.snapshot(runtime, now),
            "histograms": [histogram_report(k, h) for k, h in stats.histograms()],
        }
        try:
            data = json.dumps(line, allow_nan=False).encode() + b"\n"
        except ValueError:  # a NaN or inf slipped into the stats: a bug, not worth dying for
            log.exception("cannot encode the stats report")
            return
        writer.write(data)

    runtime = Runtime(
        dataclasses.replace(config, demo=()),
        access_log,
        reuse_port=True,
        on_tick=report,
        admin=False,
        hard_on_repeat=False,  # systemd and the terminal signal us and the supervisor both
        worker=index,
        quic_fds=quic_fds,
        quic_channel=socket.socket(fileno=quic_channel) if quic_channel >= 0 else None,
        shared=shared,
    )

    async def commands() -> None:
        while line := await reader.readline():
            try:
                command = json.loads(line)
                if command.get("cmd") == "drain":
                    runtime.set_draining(command["pool"], command["server"], command["draining"])
                elif command.get("cmd") == "purge":  # answered on the report channel
                    done = runtime.purge_cache(Purge.from_json(command["purge"]))
                    writer.write(json.dumps({"reply": command["id"], **done}).encode() + b"\n")
            except (ValueError, KeyError, TypeError, AttributeError):
                log.warning("ignoring a malformed command from the supervisor: %r", line[:200])
        log.warning("the supervisor went away; stopping")
        runtime.stop()

    async with anyio.create_task_group() as tg:
        tg.start_soon(commands)
        await runtime.run()
        tg.cancel_scope.cancel()
    writer.close()
