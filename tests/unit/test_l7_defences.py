"""The HTTP/2 flood counters (l7/defences.py), with numbers for the clock."""

from __future__ import annotations

from l7.defences import FloodGuard, SlidingCount


def test_a_steady_rate_under_the_limit_never_trips():
    count = SlidingCount(100, 10.0)
    now = 1000.0
    for _ in range(2000):  # 9 per second for over 200 s: 90 per window
        assert not count.add(now)
        now += 1 / 9


def test_a_steady_rate_near_the_limit_never_trips():
    """95 % of the limit, not 99 %: the estimate weighs the last window linearly, so a rate
    within an event or two of the limit can read one over it at a window's edge."""
    count = SlidingCount(100, 10.0)
    now = 50.0
    for _ in range(5000):  # 95 per window, spread evenly, not aligned with the windows
        assert not count.add(now)
        now += 10.0 / 95


def test_a_burst_trips_at_the_first_event_over_the_limit():
    count = SlidingCount(100, 10.0)
    assert [count.add(5.0 + i * 0.001) for i in range(101)] == [False] * 100 + [True]
    assert count.add(5.2)  # and stays over while the burst is in the window


def test_the_last_window_weighs_less_as_time_passes():
    count = SlidingCount(100, 10.0)
    for _ in range(100):
        assert not count.add(0.0)
    assert count.add(10.0)  # a new window, but the last one still weighs all of its 100
    count = SlidingCount(100, 10.0)
    for _ in range(100):
        count.add(0.0)
    # 9 s into the next window the last one weighs 10 %: room for about 90 more.
    assert [count.add(19.0) for _ in range(91)] == [False] * 90 + [True]


def test_windows_roll_over_and_an_old_burst_is_forgotten():
    count = SlidingCount(10, 1.0)
    for start in (0.0, 2.5, 7.0, 100.0):  # each burst two windows or more after the last
        assert [count.add(start) for _ in range(11)] == [False] * 10 + [True]


def test_a_clock_that_starts_late_is_fine():
    count = SlidingCount(5, 10.0)
    assert [count.add(123456.0) for _ in range(6)] == [False] * 5 + [True]


def test_flood_guard_counts_resets_and_control_frames_apart():
    guard = FloodGuard(max_resets=3, max_control=5, window=10.0)
    assert [guard.reset(1.0) for _ in range(4)] == [False, False, False, True]
    assert [guard.control(1.0) for _ in range(6)] == [False] * 5 + [True]


def test_flood_guard_limit_zero_is_off():
    guard = FloodGuard(max_resets=0, max_control=0)
    assert not any(guard.reset(1.0) or guard.control(1.0) for _ in range(100_000))
