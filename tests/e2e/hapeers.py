"""The backend and the client of the HA test, run inside its network namespaces as scripts.

python hapeers.py backend HOST PORT     answer each connection with the address it came
                                        from (which proxy relayed it), then close
python hapeers.py client HOST PORT S    for at most S seconds, one short connection after
                                        another; one line per attempt on stdout:
                                        "<monotonic time> ok <proxy address>" or
                                        "<monotonic time> fail <error>"
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
    else:
        client(host, port, float(sys.argv[4]))
