"""Server state (health hysteresis, passive ejection, slow start, drain) and pool choice."""

from __future__ import annotations

from l4lb.config import Address, HealthConfig, PassiveConfig, PoolConfig, ServerConfig
from l4lb.health.state import Hysteresis, Transition
from l4lb.pool import Pool
from l4lb.server import Server, ServerState


def make_server(name: str = "s", port: int = 1, **kw) -> Server:
    server = Server("p", ServerConfig(name=name, address=Address("127.0.0.1", port), **kw))
    server.family, server.sockaddr = 2, ("127.0.0.1", port)
    return server


def make_pool(servers: list[Server], **kw) -> Pool:
    config = PoolConfig(name="p", servers=(), **kw)
    for s in servers:
        s.slow_start = config.slow_start
    return Pool(config, servers)


def test_hysteresis_needs_fall_failures_and_rise_successes():
    h = Hysteresis(rise=2, fall=3)
    assert [h.observe(False) for _ in range(3)] == [
        Transition.PENDING,
        Transition.PENDING,
        Transition.WENT_DOWN,
    ]
    assert h.observe(False) is Transition.UNCHANGED
    assert h.observe(True) is Transition.PENDING
    assert h.observe(False) is Transition.UNCHANGED  # the streak resets
    assert [h.observe(True) for _ in range(2)] == [Transition.PENDING, Transition.WENT_UP]


def test_active_checks_take_a_server_out_and_back():
    s = make_server()
    s.apply(ServerConfig("s", Address("127.0.0.1", 1)), HealthConfig(rise=1, fall=2))
    assert s.available(0)
    s.on_check(False, 1.0)
    assert s.available(1.0)
    assert s.on_check(False, 2.0) is Transition.WENT_DOWN
    assert not s.available(2.0) and s.state(2.0) is ServerState.DOWN
    assert s.on_check(True, 3.0) is Transition.WENT_UP
    assert s.available(3.0)


def test_passive_ejection_and_cool_off():
    s = make_server()
    s.apply(ServerConfig("s", Address("127.0.0.1", 1)), passive=PassiveConfig(2, 10.0))
    assert not s.on_connect_failed(0.0)
    assert s.on_connect_failed(0.5)
    assert not s.available(5.0) and s.state(5.0) is ServerState.DOWN
    assert s.available(10.5)


def test_success_resets_the_passive_streak():
    s = make_server()
    s.apply(ServerConfig("s", Address("127.0.0.1", 1)), passive=PassiveConfig(2, 10.0))
    s.on_connect_failed(0.0)
    s.on_connected()
    assert not s.on_connect_failed(1.0)


def test_slow_start_ramps_weight_after_coming_back():
    s = make_server(weight=10)
    s.apply(
        ServerConfig("s", Address("127.0.0.1", 1), weight=10),
        HealthConfig(rise=1, fall=1),
        slow_start=20.0,
    )
    assert not s.refresh_weight(100.0) and s.weight_now == 10.0  # up since startup: full
    s.on_check(False, 100.0)
    s.on_check(True, 200.0)
    assert s.state(205.0) is ServerState.SLOW_START
    assert s.refresh_weight(205.0) and s.weight_now == 2.5
    assert s.refresh_weight(215.0) and s.weight_now == 7.5
    assert not s.refresh_weight(220.0) and s.weight_now == 10.0


def test_slow_start_shifts_traffic_gradually():
    old, new = make_server("old", 1), make_server("new", 2)
    pool = make_pool([old, new], balance="weighted_round_robin", slow_start=10.0)
    new.up_since = 0.0
    early = [pool.pick(1.0).name for _ in range(100)]
    late = [pool.pick(10.0).name for _ in range(100)]
    assert early.count("new") <= 15
    assert 45 <= late.count("new") <= 55


def test_drain_and_server_limit():
    a, b = make_server("a", 1, drain=True), make_server("b", 2, max_connections=1)
    pool = make_pool([a, b])
    assert pool.pick(0).name == "b"
    b.active = 1
    assert pool.pick(0) is None


def test_backups_only_when_no_primary_is_available():
    a, bk = make_server("a", 1), make_server("bk", 2, backup=True)
    pool = make_pool([a, bk])
    assert {pool.pick(0).name for _ in range(4)} == {"a"}
    a.ejected_until = 5.0
    assert pool.pick(1.0).name == "bk"
    assert pool.pick(6.0).name == "a"  # cool-off over


def test_tried_servers_are_skipped():
    a, b = make_server("a", 1), make_server("b", 2)
    pool = make_pool([a, b])
    assert pool.pick(0, tried=[a]).name == "b"
    assert pool.pick(0, tried=[a, b]) is None


def test_unresolved_server_is_out_of_rotation():
    a = make_server("a", 1)
    a.family = 0
    assert make_pool([a]).pick(0) is None


def test_addresses_resolved_beforehand_are_used_as_they_are():
    """Reload resolves in a thread (`resolve_addresses`), then builds pools from the result
    without another lookup."""
    from l4lb.pool import build_pools, resolve_addresses

    servers = (
        ServerConfig("a", Address("127.0.0.1", 81)),
        ServerConfig("b", Address("localhost", 82)),
        ServerConfig("c", Address("127.0.0.1", 81)),
    )
    config = PoolConfig(name="p", servers=servers)
    found = resolve_addresses([config])
    assert set(found) == {("127.0.0.1", 81), ("localhost", 82)}
    assert found[("127.0.0.1", 81)][1][:2] == ("127.0.0.1", 81)
    found[("localhost", 82)] = "cannot resolve 'localhost': made up for the test"
    pool = build_pools([config], {}, 0.0, found)["p"]
    a, b, _ = pool.servers
    assert a.family and a.sockaddr[:2] == ("127.0.0.1", 81)
    assert b.family == 0 and b.last_check.startswith("cannot resolve")
    assert [s.name for s in [pool.pick(0.0) for _ in range(4)]].count("b") == 0
