"""Listener IP rules and per-client limits end to end: closed at accept, before any byte."""

from __future__ import annotations

import json
import socket

from tests.e2e.helpers import free_port, pool_toml, wait_until


def _config(port: int, backend, access: str, host: str = "127.0.0.1", extra: str = "") -> str:
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return (
        f'[listener.l]\nbind = "{bind}"\npool = "p"\n{extra}\n'
        f"[listener.l.access]\n{access}\n" + pool_toml("p", [backend])
    )


def _first_bytes(port: int, host: str = "127.0.0.1", send: bytes = b"") -> bytes:
    """What the listener sends first: the echo backend's name, or b"" when closed at once."""
    with socket.create_connection((host, port), timeout=5) as s:
        if send:
            s.sendall(send)
        try:
            return s.recv(100)
        except ConnectionResetError:
            return b""


def _status(admin: int) -> dict:
    with socket.create_connection(("127.0.0.1", admin), timeout=5) as s:
        s.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return json.loads(data.split(b"\r\n\r\n", 1)[1])


def test_deny_closes_at_accept_and_allow_lets_through(proxy, backends):
    (a,) = backends("a")
    port, admin = free_port(), free_port()
    p = proxy(
        f'[admin]\nbind = "127.0.0.1:{admin}"\n'
        + _config(port, a, 'deny = ["127.0.0.0/8"]\nallow = ["127.0.0.2"]')
    )
    assert _first_bytes(port) == b""
    assert p.wait_log(r"listener l: 127\.0\.0\.1 closed at accept \(denied\)")
    assert a.accepted == 0
    listener = _status(admin)["listeners"][0]
    assert listener["denied"] == 1 and listener["total"] == 0
    # The longer prefix wins: 127.0.0.2 is allowed inside the denied 127/8.
    with socket.create_connection(("127.0.0.1", port), 5, ("127.0.0.2", 0)) as s:
        assert s.recv(10) == b"a\n"


def test_ipv6_allow_list(proxy, backends):
    (a,) = backends("a")
    port = free_port("::1")
    proxy(_config(port, a, 'allow = ["::1/128"]', host="::1"))
    assert _first_bytes(port, "::1") == b"a\n"
    port2 = free_port("::1")
    # (a second instance: an allow list without ::1 denies it)
    proxy(_config(port2, a, 'allow = ["2001:db8::/32"]', host="::1"))
    assert _first_bytes(port2, "::1") == b""


def test_deny_file_is_read_again_on_reload(proxy, backends, tmp_path):
    (a,) = backends("a")
    port = free_port()
    rules = tmp_path / "deny.txt"
    rules.write_text("# nothing blocked yet\n192.0.2.0/24\n")
    config = _config(port, a, f'deny_file = "{rules}"')
    p = proxy(config)
    assert _first_bytes(port) == b"a\n"
    rules.write_text("192.0.2.0/24\n127.0.0.1  # this host\n")
    assert p.reload(config)
    assert _first_bytes(port) == b""
    rules.write_text("not-a-range\n")
    assert not p.reload(config)
    assert "deny.txt:1: 'not-a-range' is not an address range" in p.log()
    assert _first_bytes(port) == b""  # the old rules stay


def test_proxy_protocol_rules_see_the_real_client(proxy, backends):
    (a,) = backends("a")
    port = free_port()
    proxy(_config(port, a, 'deny = ["203.0.113.0/24"]', extra="accept_proxy = true"))
    bad = b"PROXY TCP4 203.0.113.5 127.0.0.1 4000 80\r\n"
    good = b"PROXY TCP4 198.51.100.1 127.0.0.1 4000 80\r\n"
    assert _first_bytes(port, send=bad) == b""
    assert _first_bytes(port, send=good) == b"a\n"
    assert a.accepted == 1


def test_max_per_client(proxy, backends):
    (a,) = backends("a")
    port, admin = free_port(), free_port()
    proxy(f'[admin]\nbind = "127.0.0.1:{admin}"\n' + _config(port, a, "max_per_client = 1"))
    held = socket.create_connection(("127.0.0.1", port), timeout=5)
    assert held.recv(10) == b"a\n"
    assert _first_bytes(port) == b""
    # Another address is not limited by 127.0.0.1's connection.
    with socket.create_connection(("127.0.0.1", port), 5, ("127.0.0.3", 0)) as s:
        assert s.recv(10) == b"a\n"
    held.close()
    assert wait_until(lambda: _status(admin)["listeners"][0]["active"] == 0)
    assert _first_bytes(port) == b"a\n"
    assert _status(admin)["listeners"][0]["limited"] == 1


def test_rate_per_client(proxy, backends):
    (a,) = backends("a")
    port, admin = free_port(), free_port()
    proxy(
        f'[admin]\nbind = "127.0.0.1:{admin}"\n'
        + _config(port, a, "rate_per_client = 1\nrate_burst = 1")
    )
    got = [_first_bytes(port) for _ in range(20)]  # 20 in far less than 20 s
    assert got[0] == b"a\n" and b"" in got
    limited = _status(admin)["listeners"][0]["limited"]
    assert limited == got.count(b"")
    with socket.create_connection(("127.0.0.1", admin), timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert f'l4lb_listener_limited_total{{listener="l"}} {limited}'.encode() in data
