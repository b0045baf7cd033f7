"""KeyedGcra with a fake clock: burst, steady rate, retry-after, remaining, bounded keys."""

import pytest

from l4lb.gcra import KeyedGcra


def test_burst_then_reject_then_refill():
    g = KeyedGcra(rate=2, period=1.0, burst=3)  # one request per 0.5 s, three at once
    now = 100.0
    got = [g.check("a", now) for _ in range(4)]
    assert [d.allowed for d in got] == [True, True, True, False]
    assert [d.remaining for d in got[:3]] == [2, 1, 0]
    assert got[3].retry_after == pytest.approx(0.5)
    assert not g.check("a", now + 0.49).allowed
    assert g.check("a", now + 0.5).allowed
    assert g.rejected == 2 and g.checked == 6


def test_keys_are_independent_and_rejections_cost_nothing():
    g = KeyedGcra(rate=1, period=1.0, burst=1)
    assert g.check("a", 0.0).allowed
    for _ in range(10):
        assert not g.check("a", 0.1).allowed
    assert g.check("b", 0.1).allowed
    assert g.check("a", 1.0).allowed  # refused requests did not push TAT further


def test_steady_rate_conforms():
    g = KeyedGcra(rate=10, period=1.0, burst=1)
    assert all(g.check("k", i * 0.1).allowed for i in range(100))
    assert not g.check("k", 99 * 0.1 + 0.05).allowed


def test_reset_and_peek():
    g = KeyedGcra(rate=1, period=10.0, burst=2)
    d = g.check("k", 0.0)
    assert d.reset == pytest.approx(10.0)
    assert g.peek("k", 0.0)
    g.check("k", 0.0)
    assert not g.peek("k", 0.0)
    assert g.peek("k", 10.0)


def test_table_is_bounded():
    g = KeyedGcra(rate=1, period=1.0, burst=1, max_keys=3)
    for i in range(10):
        assert g.check(i, 0.0).allowed
    assert len(g) <= 3
    for i in range(10, 20):  # old keys went stale: evicted first
        g.check(i, 5.0 + i)
    assert len(g) <= 3


def test_bad_rate():
    with pytest.raises(ValueError):
        KeyedGcra(rate=0, period=1.0)


def test_take_counts_as_check_does():
    """`take` (the route guard's call) decides and counts exactly as `check`."""
    a, b = KeyedGcra(5, 1.0, burst=3, max_keys=4), KeyedGcra(5, 1.0, burst=3, max_keys=4)
    for i in range(60):
        now = i * 0.07
        key = "hot" if i % 4 else f"k{i % 6}"
        decision = a.check(key, now)
        retry = b.take(key, now)
        assert decision.allowed == (retry == 0.0)
        if not decision.allowed:
            assert retry == pytest.approx(decision.retry_after) and retry > 0
        assert a.tat == b.tat and list(a.tat) == list(b.tat)
    assert (a.checked, a.rejected) == (b.checked, b.rejected) and a.rejected > 0
