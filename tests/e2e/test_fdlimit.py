"""l4lb raises its open-files soft limit to the hard limit at start: started from a shell
whose soft limit is low (1,024 is common), it still holds more connections than that soft
limit allows (2 descriptors each), as HAProxy does."""

from __future__ import annotations

import resource
import socket

import pytest

from tests.e2e.helpers import free_port, pool_toml

SOFT = 256  # about 110 proxied connections per process without the raise
CONNS = 300


@pytest.mark.parametrize("workers", [1, 2])
def test_holds_more_connections_than_the_soft_limit_it_started_with(proxy, backends, workers):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4 * CONNS:
        pytest.skip(f"hard open-files limit {hard} is below {4 * CONNS}")
    (a,) = backends("a")
    port = free_port()
    config = (
        f"[global]\nworkers = {workers}\n"
        f'[listener.l]\nbind = "127.0.0.1:{port}"\npool = "p"\n' + pool_toml("p", [a])
    )
    resource.setrlimit(resource.RLIMIT_NOFILE, (SOFT, hard))  # inherited by l4lb
    try:
        p = proxy(config)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    held: list[socket.socket] = []
    try:
        for _ in range(CONNS):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            held.append(s)
            assert s.recv(100).startswith(b"a"), p.log()
        for s in held:  # every one is still relayed both ways
            s.sendall(b"ping")
            assert s.recv(100) == b"ping"
    finally:
        for s in held:
            s.close()
    assert "accept failed" not in p.log()
    assert p.stop() == 0
