"""The backend and the client of the HA test, run inside its network namespaces as scripts.

python hapeers.py backend HOST PORT     answer each connection with the address it came
                                        from (which proxy relayed it), then close
python hapeers.py client HOST PORT S    for at most S seconds, one short connection after
                                        another; one line per attempt on stdout:
                                        "<monotonic time> ok <proxy address>" or
                                        "<monotonic time> fail <error>"
python hapeers.py httpbackend HOST PORT the backend, for HTTP: one response per connection,
                                        its body the address the request came from
python hapeers.py http HOST PORT PATH N N requests for PATH, each on a new connection; one
                                        line per request on stdout: "<status> <body>" or
                                        "fail <error>" (the scaling test, tests/e2e/scalelab.py)
"""

from __future__ import annotations

import socket
import sys
import time

CONNECT_TIMEOUT = 1.0  # a SYN lost while the address moves is retried once by the kernel
PAUSE = 0.05  # between attempts: about 15 connections a second, far from a flood


def backend(host: str, port: int) -> None:
    with socket.create_server((host, port), backlog=128) as server:
        while True:
            conn, (peer, _) = server.accept()
            with conn:
                try:
                    conn.sendall(f"{peer}\n".encode())
                except OSError:
                    pass


def http_backend(host: str, port: int) -> None:
    with socket.create_server((host, port), backlog=128) as server:
        while True:
            conn, (peer, _) = server.accept()
            with conn:
                try:
                    head = b""
                    while b"\r\n\r\n" not in head and len(head) < 65536:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        head += chunk
                    body = f"{peer}\n".encode()
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                        % (len(body), body)
                    )
                except OSError:
                    pass


def http(host: str, port: int, path: str, count: int) -> None:
    request = f"GET {path} HTTP/1.1\r\nHost: vip\r\nConnection: close\r\n\r\n".encode()
    for _ in range(count):
        try:
            with socket.create_connection((host, port), timeout=5) as sock:
                sock.sendall(request)
                data = b""
                while chunk := sock.recv(65536):
                    data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            status = head.split(b" ", 2)[1].decode() if head else "none"
            result = f"{status} {body.decode(errors='replace').strip()}"
        except (OSError, IndexError) as exc:
            result = f"fail {type(exc).__name__}"
        print(result.splitlines()[0] if result else result, flush=True)


def client(host: str, port: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT) as sock:
                data = b""
                while not data.endswith(b"\n"):
                    chunk = sock.recv(100)
                    if not chunk:
                        break
                    data += chunk
            line = data.decode().strip()
            result = f"ok {line}" if line else "fail closed without an answer"
        except OSError as exc:
            result = f"fail {type(exc).__name__}"
        print(f"{started:.3f} {result}", flush=True)
        time.sleep(PAUSE)


if __name__ == "__main__":
    role, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if role == "backend":
        backend(host, port)
    elif role == "httpbackend":
        http_backend(host, port)
    elif role == "http":
        http(host, port, sys.argv[4], int(sys.argv[5]))
    else:
        client(host, port, float(sys.argv[4]))
