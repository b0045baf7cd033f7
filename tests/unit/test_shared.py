"""The workers' shared memory (`l4lb.shared`), with two workers' views of one segment in this
process: what one worker counts, the other sees."""

from __future__ import annotations

import pytest

from l4lb.attempt import Attempt
from l4lb.clientgate import ClientGate
from l4lb.config.schema import AccessConfig, Address, HealthConfig, PoolConfig, ServerConfig
from l4lb.errors import L4lbError
from l4lb.gcra import KeyedGcra, Limiters
from l4lb.pool import Pool
from l4lb.server import Server
from l4lb.shared.limits import SharedClients, SharedRates
from l4lb.shared.segment import Segment
from l4lb.shared.servers import ServerSlots


@pytest.fixture
def pair(monkeypatch):
    """The supervisor's segment and two workers attached to it."""
    made = Segment.create(2)
    monkeypatch.setenv("PYTHONHASHSEED", str(made.seed))
    views = [Segment.attach(made.fd, 0), Segment.attach(made.fd, 1)]
    yield made, views
    for view in views:
        view.close()


def server(name: str, max_connections: int = 0) -> Server:
    config = ServerConfig(name, Address("127.0.0.1", 1), max_connections=max_connections)
    s = Server("p", config)
    s.family = 2
    return s


def pool(*servers: Server, health: bool = True) -> Pool:
    config = PoolConfig("p", (), health=HealthConfig() if health else None)
    return Pool(config, list(servers))


def test_one_process_reads_its_own_count_as_the_load():
    s = server("a")
    s.active = 3
    assert s.load == 3  # `workers = 1`: `load` is `active` itself


def test_attach_refuses_a_process_that_hashes_differently(monkeypatch):
    made = Segment.create(2)
    monkeypatch.setenv("PYTHONHASHSEED", str(made.seed + 1))
    with pytest.raises(L4lbError, match="PYTHONHASHSEED"):
        Segment.attach(made.fd, 0)
    monkeypatch.setenv("PYTHONHASHSEED", str(made.seed))
    with pytest.raises(L4lbError, match="outside"):
        Segment.attach(made.fd, 2)


def test_active_connections_and_max_connections_are_the_instances(pair):
    made, (w0, w1) = pair
    slots0, slots1 = ServerSlots(w0), ServerSlots(w1)
    a0, b0 = server("a", max_connections=2), server("b")
    a1, b1 = server("a", max_connections=2), server("b")
    slots0.bind([pool(a0, b0)], 0.0)
    slots1.bind([pool(b1, a1)], 0.0)  # another order: slots go by name
    assert (a0.slot, b0.slot) == (a1.slot, b1.slot) and a0.slot != b0.slot
    first, second = Attempt(0), Attempt(0)
    assert first.begin(a0, None, 0.0) and second.begin(a1, None, 0.0)
    assert (a0.active, a1.active) == (1, 1)  # each worker's own (its stats)
    assert a0.load == a1.load == 2  # the instance's (balancers, limits)
    assert a0.shared is slots0 and a1.shared is slots1
    assert not a0.available(0.0) and not a1.available(0.0)  # max_connections = 2, in all
    first.end(0.0)
    assert a1.load == 1 and a1.available(0.0)
    made.forget(1)  # worker 1 died: its connections are gone with it
    assert a0.load == 0


def test_a_removed_server_keeps_its_slot_while_counted_and_names_reuse_free_slots(pair):
    _, (w0, w1) = pair
    slots0, slots1 = ServerSlots(w0), ServerSlots(w1)
    a0, a1 = server("a"), server("a")
    slots0.bind([pool(a0)], 0.0)
    slots1.bind([pool(a1)], 0.0)
    Attempt(0).begin(a0, None, 0.0)
    slots0.bind([pool()], 0.0)  # reloads without "a"; its connection drains
    slots1.bind([pool()], 0.0)
    assert slots0._idle(a0.slot) is False  # still counted
    a0.shared.active[a0.cell] -= 1
    assert slots0._idle(a0.slot)
    again = server("a")
    slots1.bind([pool(again)], 0.0)  # back by name: the same slot, counts from zero
    assert again.slot == a0.slot and again.load == 0


def test_health_published_by_worker_0_is_taken_by_the_others(pair):
    _, (w0, w1) = pair
    slots0, slots1 = ServerSlots(w0), ServerSlots(w1)
    assert slots0.checks and not slots1.checks
    a0, a1 = server("a"), server("a")
    slots0.bind([pool(a0)], 0.0)
    slots1.bind([pool(a1)], 0.0)
    a0.health.up = False
    slots0.publish(a0.slot, False, "tcp: Connection refused")
    slots1.pull([pool(a1)], 5.0)
    assert not a1.health.up and a1.last_check == "tcp: Connection refused"
    assert not a1.available(5.0)
    late = server("a")  # a restarted worker starts from the published state
    ServerSlots(w1).bind([pool(late)], 6.0)
    assert not late.health.up
    slots0.publish(a0.slot, True, "tcp: ok")
    slots1.pull([pool(a1)], 7.0)
    assert a1.health.up and a1.up_since == 7.0  # slow start counts from here
    slots0.publish(a0.slot, False, "tcp: timeout")
    a1.health.up = True  # a reload removed the pool's checks (Server.apply: up)
    slots1.pull([pool(a1, health=False)], 8.0)
    assert a1.health.up  # what worker 0 published before does not count


def test_client_limits_hold_across_workers(pair):
    made, (w0, w1) = pair
    access = AccessConfig(max_per_client=2, rate_per_client=3, rate_burst=3)
    g0 = ClientGate(access, SharedClients(w0), "l")
    g1 = ClientGate(access, SharedClients(w1), "l")
    other = ClientGate(access, SharedClients(w1), "other")  # another listener: its own count
    assert g0.admit("192.0.2.1", 0.0) is None
    assert g1.admit("192.0.2.1", 0.0) is None
    assert g0.admit("192.0.2.1", 0.0) == "client_max"
    assert other.admit("192.0.2.1", 0.0) is None
    g1.release("192.0.2.1")
    assert g0.admit("192.0.2.1", 0.0) is None  # third of a burst of 3
    g0.release("192.0.2.1")
    assert g1.admit("192.0.2.1", 0.0) == "client_rate"  # the burst is the instance's
    assert g1.admit("192.0.2.1", 1 / 3) is None
    made.forget(0)  # worker 0 died: its connection no longer counts
    assert SharedClients(w1).count(("l", "192.0.2.1")) == 1


def test_route_rate_limit_is_one_budget_for_every_worker(pair):
    _, (w0, w1) = pair
    l0, l1 = Limiters(), Limiters()
    l0.shared, l1.shared = SharedRates(w0), SharedRates(w1)
    key = ("l", "r", "limit")
    g0, g1 = l0.make(key, 5, 1.0, 5, 100), l1.make(key, 5, 1.0, 5, 100)
    assert isinstance(g0, KeyedGcra) and l0.make(key, 5, 1.0, 5, 100) is g0
    allowed = [g.check("192.0.2.1", 10.0).allowed for g in (g0, g1) * 5]
    assert allowed.count(True) == 5  # five in total, not five per worker
    assert not g1.peek("192.0.2.1", 10.0) and g1.peek("192.0.2.2", 10.0)
    assert g0.check("192.0.2.1", 10.2).allowed  # one interval later, one more
    assert g1.take("192.0.2.1", 10.2) > 0  # the route guard's call: the same shared budget
    assert g1.take("192.0.2.1", 10.4) == 0.0
    alone = Limiters().make(key, 5, 1.0, 5, 100)
    assert type(alone) is KeyedGcra  # workers = 1: this process's table, as before


def test_a_full_bucket_forgets_the_oldest_rate_key(pair):
    _, (w0, _) = pair
    rates = SharedRates(w0)
    table = rates.table
    keys = [k for k in range(1, 10_000_000) if (k % table.buckets) == 3][:9]
    table.segment.acquire()
    try:
        slots = [table.slot(k, 0.0) for k in keys[:8]]
        for i, s in enumerate(slots):
            table.tat[s] = 100.0 + i  # all live
        newcomer = table.slot(keys[8], 0.0)
    finally:
        table.segment.release()
    assert newcomer == slots[0]  # the oldest TAT made room
