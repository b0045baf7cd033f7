"""The event log of `l4lb up`, read as an operator (and grep, journald, a log shipper) reads it:
one entry per line, UTC times with a Z, real addresses, and reloads that say what changed."""

from __future__ import annotations

import re

from tests.e2e.helpers import free_port, name_of, pool_toml

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (INFO|WARNING|ERROR) ")


def config(port: int, admin: int, backends, balance: str = "round_robin", extra=()) -> str:
    return (
        f'[admin]\nbind = "127.0.0.1:{admin}"\n'
        f'[listener.l]\nbind = "127.0.0.1:{port}"\npool = "p"\n'
        + pool_toml("p", [*backends, *extra], balance=f'"{balance}"')
    )


def event_lines(p) -> list[str]:
    return [line for line in p.err.read_text().splitlines() if line]


def test_event_log_lines_are_stamped_single_lines_that_say_what_changed(proxy, backends):
    a, b = backends("a", "b")
    port, admin = free_port(), free_port()
    p = proxy(config(port, admin, [a, b]))
    assert p.wait_log(r"admin API on ")
    lines = event_lines(p)
    assert all(STAMP.match(line) for line in lines), lines
    assert any(line.endswith(f"admin API on 127.0.0.1:{admin} (no token)") for line in lines)

    # Two errors, one of them a server name that cannot resolve: one entry, both errors.
    bad = config(port, admin, [a, b], balance="nope", extra=['address = "db.invalid:80"'])
    assert not p.reload(bad)
    (failed,) = [line for line in event_lines(p) if "reload failed" in line]
    assert STAMP.match(failed)
    assert "unknown algorithm 'nope'" in failed and "cannot resolve 'db.invalid'" in failed
    assert all(STAMP.match(line) for line in event_lines(p)), event_lines(p)
    assert {name_of(port) for _ in range(4)} == {"a", "b"}  # still the old config

    assert p.reload(config(port, admin, [a], balance="least_conn"))
    (applied,) = [line for line in event_lines(p) if "reload 1 applied" in line]
    assert applied.endswith(
        "2 changes: ~ pool p: balance 'round_robin' -> 'least_conn'; "
        "- server p/b: drains, then leaves"
    ), applied
    assert p.reload(config(port, admin, [a], balance="least_conn"))
    assert any(line.endswith(": no changes") for line in event_lines(p))
