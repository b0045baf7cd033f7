"""Hot reload under load: short connections and long streams keep working across ten reloads."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time

from tests.e2e.helpers import free_port, pool_toml


def test_ten_reloads_under_load_lose_nothing(proxy, backends):
    b1, b2, b3 = backends("b1", "b2", "b3")
    port, extra = free_port(), free_port()
    configs = [
        f'[listener.l]\nbind = "127.0.0.1:{port}"\npool = "p"\n' + pool_toml("p", [b1, b2]),
        # Another pool, another algorithm, an extra listener, weights: a real change.
        f'[listener.l]\nbind = "127.0.0.1:{port}"\npool = "q"\nidle_timeout = "1m"\n'
        f'[listener.m]\nbind = "127.0.0.1:{extra}"\npool = "q"\n'
        + pool_toml("q", [b2, b3], balance='"least_conn"'),
    ]
    p = proxy(configs[0])
    stop = threading.Event()
    failures: list[str] = []
    short_ok = [0]

    def short_loop() -> None:
        while not stop.is_set():
            payload = os.urandom(2048)
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    name = s.recv(3)
                    s.sendall(payload)
                    got = b""
                    while len(got) < len(payload):
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        got += chunk
                if name not in (b"b1\n", b"b2\n", b"b3\n") or got != payload:
                    failures.append(f"short: name={name!r} echoed {len(got)} of {len(payload)}")
                else:
                    short_ok[0] += 1
            except OSError as exc:
                failures.append(f"short: {exc!r}")

    def stream() -> None:
        sent, received = hashlib.sha256(), hashlib.sha256()
        total = 0
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.recv(3)
                while not stop.is_set():
                    chunk = os.urandom(16384)
                    sent.update(chunk)
                    s.sendall(chunk)
                    got = 0
                    while got < len(chunk):
                        data = s.recv(65536)
                        if not data:
                            raise ConnectionError(f"stream cut after {total + got} bytes")
                        received.update(data)
                        got += len(data)
                    total += len(chunk)
            if sent.digest() != received.digest():
                failures.append("stream: checksum mismatch")
        except OSError as exc:
            failures.append(f"stream: {exc!r}")

    threads = [threading.Thread(target=short_loop) for _ in range(2)]
    threads += [threading.Thread(target=stream) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for i in range(10):
            time.sleep(0.25)
            assert p.reload(configs[(i + 1) % 2]), p.log()[-2000:]
        time.sleep(0.25)
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    assert failures == []
    assert short_ok[0] > 20  # the loop really ran throughout
    assert "reload 10 applied" in p.log()
