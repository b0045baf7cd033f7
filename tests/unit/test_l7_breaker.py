"""Circuit breaker: the whole closed -> open -> half-open -> closed cycle, stepped with `now`."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from l7.breaker import CircuitBreaker, Transition


def tripped(at: float = 0.0, **kwargs: float) -> CircuitBreaker:
    breaker = CircuitBreaker(**kwargs)  # type: ignore[arg-type]
    for _ in range(breaker.failures):
        breaker.on_failure(at)
    assert breaker.state(at) == "open"
    return breaker


def test_closed_allows_everything_and_counts_only_consecutive_failures() -> None:
    breaker = CircuitBreaker(failures=3)
    assert breaker.state(0.0) == "closed"
    assert all(breaker.allow(t) for t in range(10))
    assert breaker.on_failure(1.0) is None
    assert breaker.on_failure(2.0) is None
    assert breaker.on_success(3.0) is None  # resets the streak
    assert breaker.on_failure(4.0) is None
    assert breaker.on_failure(5.0) is None
    assert breaker.state(5.0) == "closed"
    transition = breaker.on_failure(6.0)
    assert transition == Transition("closed", "open", 6.0, "3 consecutive failures")
    assert breaker.last_transition == transition
    assert breaker.state(6.0) == "open"


def test_open_refuses_until_cool_off_has_elapsed() -> None:
    breaker = tripped(at=100.0, cool_off=10.0)
    assert breaker.next_deadline() == 110.0
    assert not breaker.allow(100.0)
    assert not breaker.allow(109.999)
    assert breaker.state(109.999) == "open"
    assert breaker.state(110.0) == "half_open"
    assert breaker.last_transition == Transition(
        "open", "half_open", 110.0, "cool-off of 10s elapsed"
    )
    assert breaker.next_deadline() is None


def test_outcomes_while_open_are_ignored() -> None:
    breaker = tripped(at=0.0, cool_off=10.0)
    assert breaker.on_failure(5.0) is None
    assert breaker.on_success(6.0) is None
    assert breaker.next_deadline() == 10.0  # not extended
    assert breaker.state(10.0) == "half_open"


def test_half_open_limits_trials_in_flight() -> None:
    breaker = tripped(cool_off=1.0, half_open_requests=2)
    assert breaker.allow(1.0)
    assert breaker.allow(1.0)
    assert not breaker.allow(1.0)  # two trials in flight
    assert breaker.on_success(1.5) is None  # one back, one success of two
    assert breaker.allow(1.5)
    assert not breaker.allow(1.5)


def test_half_open_closes_after_enough_successes() -> None:
    breaker = tripped(cool_off=1.0, half_open_requests=3)
    for _ in range(3):
        assert breaker.allow(2.0)
    assert breaker.on_success(2.1) is None
    assert breaker.on_success(2.2) is None
    transition = breaker.on_success(2.3)
    assert transition == Transition("half_open", "closed", 2.3, "3 trial requests succeeded")
    assert breaker.state(2.3) == "closed"
    assert all(breaker.allow(2.4) for _ in range(10))
    # and the streak starts from zero again
    for _ in range(4):
        breaker.on_failure(3.0)
    assert breaker.state(3.0) == "closed"
    assert breaker.on_failure(3.0) is not None


def test_failure_in_half_open_reopens_for_a_new_cool_off() -> None:
    breaker = tripped(cool_off=10.0, half_open_requests=3)
    assert breaker.allow(10.0)
    assert breaker.allow(10.0)
    assert breaker.on_success(11.0) is None
    transition = breaker.on_failure(12.0)
    assert transition == Transition("half_open", "open", 12.0, "a trial request failed")
    assert not breaker.allow(12.0)
    assert breaker.next_deadline() == 22.0
    assert breaker.state(21.9) == "open"
    # the next half-open period starts with fresh counts
    assert breaker.state(22.0) == "half_open"
    assert [breaker.allow(22.0) for _ in range(4)] == [True, True, True, False]
    for _ in range(2):
        assert breaker.on_success(23.0) is None
    assert breaker.on_success(23.0) is not None
    assert breaker.state(23.0) == "closed"


def test_abandoned_trial_gives_its_slot_back() -> None:
    breaker = tripped(cool_off=1.0, half_open_requests=1)
    assert breaker.allow(1.0)
    assert not breaker.allow(1.0)
    breaker.on_abandon(1.1)
    assert breaker.state(1.1) == "half_open"
    assert breaker.allow(1.2)
    assert breaker.on_success(1.3) is not None
    assert breaker.state(1.3) == "closed"


def test_transition_caused_by_allow_is_recorded() -> None:
    breaker = tripped(cool_off=5.0)
    count = breaker.transitions
    assert breaker.allow(5.0)
    assert breaker.transitions == count + 1
    assert breaker.last_transition is not None
    assert breaker.last_transition.new == "half_open"
    assert breaker.statistics()["state"] == "half_open"
    assert breaker.statistics()["trials_in_flight"] == 1


def test_zero_cool_off_goes_straight_to_half_open() -> None:
    breaker = CircuitBreaker(failures=1, cool_off=0.0, half_open_requests=1)
    assert breaker.on_failure(0.0) is not None
    assert breaker.state(0.0) == "half_open"


@pytest.mark.parametrize("kwargs", [{"failures": 0}, {"half_open_requests": 0}, {"cool_off": -1.0}])
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(**kwargs)  # type: ignore[arg-type]


EVENTS = st.lists(
    st.tuples(st.sampled_from(["allow", "ok", "fail", "abandon", "state"]), st.floats(0, 3)),
    max_size=200,
)


@given(EVENTS)
def test_invariants_hold_for_any_event_sequence(events: list[tuple[str, float]]) -> None:
    breaker = CircuitBreaker(failures=3, cool_off=5.0, half_open_requests=2)
    now = 0.0
    for kind, step in events:
        now += step
        before = breaker.state(now)
        if kind == "allow":
            in_flight = breaker.statistics()["trials_in_flight"]
            allowed = breaker.allow(now)
            if before == "closed":
                assert allowed
            elif before == "open":
                assert not allowed
            else:
                assert allowed == (in_flight < 2)
        elif kind == "ok":
            transition = breaker.on_success(now)
            if transition is not None:
                assert (transition.old, transition.new) == ("half_open", "closed")
        elif kind == "fail":
            transition = breaker.on_failure(now)
            if transition is not None:
                assert transition.new == "open"
        elif kind == "abandon":
            breaker.on_abandon(now)
        stats = breaker.statistics()
        assert 0 <= stats["trials_in_flight"] <= 2  # type: ignore[operator]
        assert 0 <= stats["consecutive_failures"] < 3  # type: ignore[operator]
        if breaker.state(now) == "open":
            deadline = breaker.next_deadline()
            assert deadline is not None and now < deadline
