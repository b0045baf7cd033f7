"""A real redis-server (Debian's package, installed by scripts/setup) for the global rate
limit tests: on 127.0.0.1 and a free port, no persistence, killed with SIGKILL on demand and
started again on the same port."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.e2e.helpers import free_port, wait_until

REDIS_SERVER = shutil.which("redis-server") or (
    "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
)


def need_redis() -> str:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (./scripts/setup installs Debian's package)")
    return REDIS_SERVER


def _encode(*args: str | int) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class RedisServer:
    """`cluster`: a Redis Cluster of this one node, holding every slot (its cluster bus on
    another free port: the default, port + 10000, may be taken or out of range)."""

    def __init__(
        self,
        tmp: Path,
        *,
        cluster: bool = False,
        password: str = "",
        tls: tuple[str, str, str] | None = None,
    ) -> None:
        """`password`: requirepass (this class's own commands AUTH first); `tls`: (CA file,
        certificate, key): Redis also listens with TLS on `tls_port` and asks clients for
        a certificate from that CA (Redis's default `tls-auth-clients yes`)."""
        self.binary = need_redis()
        self.port = free_port()
        self.tls_port = free_port() if tls else 0
        self.dir = tmp
        self.cluster = cluster
        self.password = password
        self.tls = tls
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        log = (self.dir / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.dir),
                "--enable-debug-command", "local",
                *(
                    ["--cluster-enabled", "yes", "--cluster-port", str(free_port()),
                     "--cluster-config-file", str(self.dir / "nodes.conf")]
                    if self.cluster else []
                ),
                *(["--requirepass", self.password] if self.password else []),
                *(
                    ["--tls-port", str(self.tls_port), "--tls-ca-cert-file", self.tls[0],
                     "--tls-cert-file", self.tls[1], "--tls-key-file", self.tls[2]]
                    if self.tls else []
                ),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        if not wait_until(self.alive, timeout=10):
            log_text = (self.dir / "redis.log").read_text()
            raise AssertionError("redis-server did not start: " + log_text)
        if self.cluster:
            self.command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
            if not wait_until(lambda: b"cluster_state:ok" in self.command("CLUSTER", "INFO")):
                raise AssertionError("the one-node Redis Cluster did not come up")

    def alive(self) -> bool:
        try:
            return self.command("PING") == b"+PONG\r\n"
        except OSError:
            return False

    def command(self, *args: str | int, wait: bool = True) -> bytes:
        """One command; the raw reply (or b"" with `wait=False`: sent, not read)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            if self.password:
                s.sendall(_encode("AUTH", self.password))
                if s.recv(65536) != b"+OK\r\n":
                    raise OSError("redis-server refused the test's AUTH")
            s.sendall(_encode(*args))
            if not wait:
                return b""
            return s.recv(65536)

    def send_and_leave(self, *args: str | int) -> socket.socket:
        """Send a command on a connection left open (e.g. DEBUG SLEEP): close it later."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        s.sendall(_encode(*args))
        return s

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None
