"""Both ends of the idle-connection test: a backend that holds connections, and a client.

    python bench/idle.py hold PORT         # accept forever, send b"x" on each, keep them open
    python bench/idle.py connect PORT N    # open N connections through a proxy, wait for b"x"

`connect` opens connections in batches and counts one as established once the backend's byte
came back through the proxy, so the proxy has both sides of it. It then prints one JSON line
(`established`, `failed`, `seconds`) and holds every connection until its stdin has a line or
closes. Each process holds one descriptor per connection; keep N under the fd limit.
"""

from __future__ import annotations

import json
import resource
import select
import socket
import sys
import time


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def hold(port: int) -> None:
    _raise_fd_limit()
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", port))
    lsock.listen(4096)
    held = []
    while True:
        try:
            conn, _ = lsock.accept()
        except OSError as exc:  # out of descriptors: say so, keep what we have
            print(f"hold: accept failed: {exc}", file=sys.stderr, flush=True)
            time.sleep(0.5)
            continue
        try:
            conn.send(b"x")
        except OSError:
            conn.close()
            continue
        held.append(conn)


def connect(port: int, count: int, batch: int = 250, batch_timeout: float = 30.0) -> None:
    _raise_fd_limit()
    ep = select.epoll()
    held: list[socket.socket] = []
    failed = 0
    errors: dict[str, int] = {}
    start = time.monotonic()
    done = 0
    while done < count:
        n = min(batch, count - done)
        waiting: dict[int, socket.socket] = {}
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            err = s.connect_ex(("127.0.0.1", port))
            if err not in (0, 115):  # EINPROGRESS
                failed += 1
                errors[str(err)] = errors.get(str(err), 0) + 1
                s.close()
                continue
            waiting[s.fileno()] = s
            ep.register(s.fileno(), select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP)
        deadline = time.monotonic() + batch_timeout
        while waiting and time.monotonic() < deadline:
            for fd, _ev in ep.poll(1.0):
                s = waiting.pop(fd, None)
                if s is None:
                    continue
                ep.unregister(fd)
                try:
                    data = s.recv(16)
                    why = "unexpected_data" if data else "closed"
                except OSError as exc:
                    data = b""
                    why = type(exc).__name__
                if data == b"x":
                    held.append(s)
                else:
                    errors[why] = errors.get(why, 0) + 1
                    failed += 1
                    s.close()
        for fd, s in waiting.items():  # no byte within the batch timeout
            ep.unregister(fd)
            s.close()
            failed += 1
            errors["timeout"] = errors.get("timeout", 0) + 1
        done += n
    result = {
        "established": len(held),
        "failed": failed,
        "errors": errors,
        "seconds": round(time.monotonic() - start, 2),
    }
    print(json.dumps(result), flush=True)
    sys.stdin.readline()
    for s in held:
        s.close()


def main(argv: list[str]) -> None:
    if len(argv) == 2 and argv[0] == "hold":
        hold(int(argv[1]))
    elif len(argv) == 3 and argv[0] == "connect":
        connect(int(argv[1]), int(argv[2]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
