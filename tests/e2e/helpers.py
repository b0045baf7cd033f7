"""Real parts for end-to-end tests: threaded TCP backends and an l4lb subprocess.

Everything listens on 127.0.0.1 (or ::1) on ephemeral ports. Nothing here mocks the network.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

__all__ = [
    "Backend",
    "Proxy",
    "TlsBackend",
    "free_port",
    "make_cert",
    "name_of",
    "pool_toml",
    "single_process",
    "wait_until",
]


def recv_head(sock: socket.socket) -> bytes | None:
    """Read until the end of a request head (and whatever came with it); None at EOF."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    return data


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        backend: Backend = self.server.backend  # type: ignore[attr-defined]
        sock: socket.socket = self.request
        with backend.lock:
            backend.accepted += 1
            backend.conns.add(sock)
        try:
            if backend.mode == "digest":
                self._digest(sock)
            elif backend.mode == "http":
                self._http(sock, backend)
            else:
                self._echo(sock, backend)
        except OSError:
            pass
        finally:
            with backend.lock:
                backend.conns.discard(sock)

    def _echo(self, sock: socket.socket, backend: Backend) -> None:
        sock.sendall(f"{backend.name}\n".encode())
        while True:
            data = sock.recv(262144)
            if not data:
                break
            sock.sendall(data)

    def _http(self, sock: socket.socket, backend: Backend) -> None:
        """One HTTP/1.0 response naming the backend, after the request head."""
        if recv_head(sock) is None:
            return
        body = f"{backend.name}\n".encode()
        sock.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    def _digest(self, sock: socket.socket) -> None:
        """Read to EOF, then answer with the digest of what came and 1 MiB of payload: the
        client's half-close must not cut the response."""
        h = hashlib.sha256()
        while True:
            data = sock.recv(262144)
            if not data:
                break
            h.update(data)
        sock.sendall(h.hexdigest().encode() + b"\n" + b"x" * (1 << 20))


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


class Backend:
    """A TCP server in a thread. Modes: "echo" (sends its name line, then echoes) and
    "digest" (see `_Handler._digest`)."""

    def __init__(self, name: str, mode: str = "echo", port: int = 0) -> None:
        self.name = name
        self.mode = mode
        self.accepted = 0
        self.conns: set[socket.socket] = set()
        self.lock = threading.Lock()
        self._server: _Server | None = None
        self.port = port
        self.start()

    def start(self) -> None:
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.backend = self  # type: ignore[attr-defined]
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        """Close the listening socket and every open connection (a killed server)."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server = None
        with self.lock:
            for sock in list(self.conns):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def name_of(port: int, host: str = "127.0.0.1", source: str | None = None) -> str:
    """Connect through the proxy and return the name line the backend sends first."""
    with socket.create_connection(
        (host, port), timeout=5, source_address=(source, 0) if source else None
    ) as s:
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(100)
            if not chunk:
                break
            data += chunk
        return data.decode().strip()


def pool_toml(name: str, servers: list[Backend | str], **options: object) -> str:
    """A [pool.NAME] table; `options` are TOML values already formatted, nested tables as
    dicts of formatted values."""
    lines = [f"[pool.{name}]"]
    tables = {}
    for key, value in options.items():
        if isinstance(value, dict):
            tables[key] = value
        else:
            lines.append(f"{key} = {value}")
    for key, body in tables.items():
        lines.append(f"[pool.{name}.{key}]")
        lines += [f"{k} = {v}" for k, v in body.items()]
    for server in servers:
        lines.append(f"[[pool.{name}.servers]]")
        if isinstance(server, Backend):
            lines += [f'name = "{server.name}"', f'address = "{server.address}"']
        else:
            lines.append(server)
    return "\n".join(lines) + "\n"


def single_process(config: str) -> str:
    """`config` with `workers = 1` in its [global] table (made if absent), unless it sets
    `workers` itself: the tests' expectations (round robin order, least_conn, counts) are
    those of one process, and the default (one worker per CPU) would change them."""
    if re.search(r"^\s*workers\s*=", config, re.M):
        return config
    if re.search(r"^\[global\][ \t]*$", config, re.M):
        return re.sub(r"^\[global\][ \t]*$", "[global]\nworkers = 1", config, count=1, flags=re.M)
    return "[global]\nworkers = 1\n" + config


class Proxy:
    """`l4lb up` as a subprocess, with its logs in files for the test to read. It runs one
    process (see `single_process`) unless the config sets `workers`."""

    def __init__(
        self,
        tmp: Path,
        config: str,
        *,
        loop: str = "",
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        new_session: bool = False,
    ):
        """`env` is added to the environment; `new_session` makes l4lb (and its workers) a
        process group of its own, to signal as systemd and a terminal do."""
        self.tmp = tmp
        self.path = tmp / "l4lb.toml"
        self.path.write_text(single_process(config))
        self.out = tmp / "stdout.log"
        self.err = tmp / "stderr.log"
        environ = {**os.environ, **(env or {})}
        if loop:
            environ["L4LB_LOOP"] = loop
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "l4lb", "up", str(self.path), "--no-tui", *args],
            stdout=self.out.open("wb"),
            stderr=self.err.open("wb"),
            env=environ,
            start_new_session=new_session,
        )
        count = len(re.findall(r"^\[listener\.[^.\]]+\]", config, re.M))
        ready = re.compile(r"listener \S+: \S+ on ")
        if not wait_until(
            lambda: len(ready.findall(self.log())) >= count or self.proc.poll() is not None
        ):
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("l4lb did not start:\n" + self.log())
        if self.proc.poll() is not None:
            raise AssertionError(f"l4lb exited with {self.proc.returncode}:\n{self.log()}")

    def log(self) -> str:
        return self.err.read_text(errors="replace") + self.out.read_text(errors="replace")

    def access_lines(self) -> list[str]:
        return [line for line in self.out.read_text().splitlines() if line]

    def wait_log(self, pattern: str, timeout: float = 10.0) -> bool:
        return wait_until(lambda: re.search(pattern, self.log()) is not None, timeout)

    def reload(self, config: str) -> bool:
        """Write `config`, send SIGHUP, and say whether it was applied."""

        def counts() -> tuple[int, int]:
            text = self.log()
            return len(re.findall(r"reload \d+ applied", text)), text.count("reload failed")

        applied, failed = counts()
        self.path.write_text(single_process(config))
        self.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: counts() != (applied, failed)), self.log()
        return counts()[0] > applied

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


def make_cert(tmp, name: str) -> tuple[str, str]:
    cert, key = tmp / f"{name}.crt", tmp / f"{name}.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            f"/CN={name}",
            "-addext",
            f"subjectAltName=DNS:{name}",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return str(cert), str(key)


def make_ca_cert(tmp, ca: str, name: str, san: str = "") -> tuple[str, str, str]:
    """A CA named `ca` (made once per folder) and a certificate for `name` it signs:
    (CA file, certificate, key). `san`: its subjectAltName (default DNS:`name`)."""
    ca_crt, ca_key = tmp / f"{ca}.ca.crt", tmp / f"{ca}.ca.key"
    cert, key, csr = tmp / f"{ca}-{name}.crt", tmp / f"{ca}-{name}.key", tmp / f"{ca}-{name}.csr"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)

    if not ca_crt.exists():
        run("req", "-x509", *ec, "-days", "2", "-subj", f"/CN={ca}", "-keyout", str(ca_key),
            "-out", str(ca_crt))  # fmt: skip
    run("req", "-new", *ec, "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(csr))
    ext = tmp / f"{ca}-{name}.ext"
    ext.write_text(f"subjectAltName={san or 'DNS:' + name}\n")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(cert))  # fmt: skip
    return str(ca_crt), str(cert), str(key)


class TlsBackend:
    """A TLS server with its own certificate; after the handshake it sends its name, or, with
    `http`, answers one HTTP request with its name as the body and closes."""

    def __init__(
        self, name: str, cert: str, key: str, client_ca: str | None = None, *, http: bool = False
    ) -> None:
        self.name = name
        self.cert = cert
        self.http = http
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        if client_ca:  # mTLS: only clients with a certificate from this CA
            ctx.load_verify_locations(client_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.ctx = ctx
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            with self.ctx.wrap_socket(conn, server_side=True) as tls:
                if self.http:
                    head = b""
                    while b"\r\n\r\n" not in head and (data := tls.recv(65536)):
                        head += data
                    body = self.name.encode()
                    tls.sendall(
                        b"HTTP/1.1 200 OK\r\nConnection: close\r\n"
                        + f"Content-Length: {len(body)}\r\n\r\n".encode()
                        + body
                    )
                    return
                tls.sendall(f"{self.name}\n".encode())
                while data := tls.recv(65536):
                    tls.sendall(data)
        except (OSError, ssl.SSLError):
            pass

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self.sock.close()
