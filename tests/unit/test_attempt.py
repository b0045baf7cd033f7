"""l4lb.attempt: every exit path of a try gives back exactly what it took.

The server, breaker and budget are the real pure objects; the clock is numbers. After each
path the four holdings are checked: `server.active`, the breaker's trial slots, the budget's
active requests and retries, and the passive check's streak.
"""

from __future__ import annotations

import pytest

from l4lb.attempt import Attempt
from l4lb.config import Address, PassiveConfig, ServerConfig
from l4lb.server import Server
from l7.breaker import CircuitBreaker
from l7.budget import RetryBudget


def server(name: str = "a", max_fails: int = 0) -> Server:
    s = Server("p", ServerConfig(name=name, address=Address("127.0.0.1", 1)))
    s.apply(
        ServerConfig(name=name, address=Address("127.0.0.1", 1)), passive=PassiveConfig(max_fails)
    )
    s.family, s.sockaddr = 2, ("127.0.0.1", 1)
    return s


def half_open(cool_off: float = 10.0, trials: int = 1) -> CircuitBreaker:
    """A breaker opened at t=0 by one failure, half-open from t=`cool_off`."""
    b = CircuitBreaker(failures=1, cool_off=cool_off, half_open_requests=trials)
    b.on_failure(0.0)
    assert b.state(cool_off) == "half_open"
    return b


def settled(a: Attempt, *servers: Server, budget: RetryBudget | None = None) -> None:
    assert a.ended and not a.holding and not a.verdict_due and not a.retry_slot
    assert [s.active for s in servers] == [0] * len(servers)
    if budget is not None:
        assert budget.active_requests == 0 and budget.active_retries == 0


def test_success_takes_and_gives_back_once():
    s, b, budget = server(), CircuitBreaker(), RetryBudget()
    a = Attempt(2, budget)
    assert budget.active_requests == 1
    assert a.begin(s, b, 1.0)
    assert (s.active, s.total, a.verdict_due, a.trial) == (1, 1, True, False)
    a.connected()
    assert a.verdict(True, 1.5) is None
    assert s.active == 1  # the body still flows
    a.end(2.0)
    a.end(3.0)  # idempotent
    settled(a, s, budget=budget)
    assert a.retries == 0 and a.server is s


def test_connect_failure_without_retry_counts_once():
    """Issue 17, bug 1: one refused connect used to leave active at -1."""
    s, budget = server(max_fails=2), RetryBudget()
    a = Attempt(0, budget)
    assert a.begin(s, CircuitBreaker(failures=5), 1.0)
    transition, ejected = a.fail(1.1, "connect")
    assert (transition, ejected) == (None, False)
    assert s.active == 0 and s.fail_streak == 1 and s.connect_failures == 1
    assert not a.retry(True, False)  # retries = 0
    a.end(1.2)
    settled(a, s, budget=budget)
    assert a.tried == (s,)


def test_connect_failure_retries_elsewhere_without_budget():
    s1, s2, budget = server("a"), server("b"), RetryBudget(min_retries_concurrent=0)
    a = Attempt(1, budget)
    assert a.begin(s1, None, 1.0)
    a.fail(1.1, "connect")
    assert a.retry(True, False)  # a connect retry costs no budget slot
    assert a.begin(s2, None, 1.1)
    assert (s1.active, s2.active) == (0, 1)
    a.connected()
    a.end(2.0)
    settled(a, s1, s2, budget=budget)
    assert a.retries == 1 and a.server is s2


def test_passive_check_ejects_on_connect_failure_and_a_connect_resets_it():
    s = server(max_fails=2)
    a = Attempt(1)
    assert a.begin(s, None, 0.0)
    assert a.fail(0.1, "connect") == (None, False)
    assert a.retry(True, False) and a.begin(s, None, 0.2)
    a.connected()
    assert s.fail_streak == 0
    a.end(0.3)
    a = Attempt(1)
    for now in (1.0, 2.0):
        assert a.begin(s, None, now)
        ejected = a.fail(now, "connect")[1]
        a.retry(True, False)
    assert ejected and not s.available(3.0)
    a.end(3.0)
    settled(a, s)


def test_no_server_holds_nothing():
    budget = RetryBudget()
    a = Attempt(2, budget)
    a.end(1.0)  # pool.pick found no server: an error answer, then the end
    settled(a, budget=budget)
    assert a.server is None and a.tried == ()


def test_breaker_open_counts_as_tried_and_takes_nothing():
    s = server()
    b = CircuitBreaker(failures=1, cool_off=10.0)
    b.on_failure(0.0)
    a = Attempt(2)
    assert not a.begin(s, b, 5.0)
    assert s.active == 0 and s.total == 0 and a.tried == (s,) and a.server is None
    a.end(5.0)
    settled(a, s)


def test_connect_failure_of_a_trial_reopens_the_breaker():
    """Issue 17, bug 2: a trial ending in a connect failure kept its slot for ever."""
    s, b = server(), half_open()
    a = Attempt(0)
    assert a.begin(s, b, 10.0) and a.trial
    transition, _ = a.fail(10.1, "connect")
    assert transition is not None and transition.new == "open"
    a.end(10.2)
    settled(a, s)
    assert b.state(20.1) == "half_open"  # another cool-off, then trials again
    a = Attempt(0)
    assert a.begin(s, b, 20.1)
    a.verdict(True, 20.2)
    a.end(20.3)
    assert b.state(20.3) == "closed"


def test_client_abort_of_a_trial_gives_the_slot_back():
    """Issue 17, bug 2: a trial whose client went away kept its slot for ever."""
    s, b = server(), half_open()
    a = Attempt(0)
    assert a.begin(s, b, 10.0) and a.trial
    assert not Attempt(0).begin(s, b, 10.0)  # the one slot is taken
    a.end(10.5)  # the client left before the response head
    settled(a, s)
    assert b.statistics()["trials_in_flight"] == 0
    a = Attempt(0)
    assert a.begin(s, b, 11.0)  # trials go on
    a.end(11.0)


def test_abort_of_a_request_admitted_while_closed_leaves_trials_alone():
    s = server()
    b = CircuitBreaker(failures=1, cool_off=10.0, half_open_requests=1)
    early = Attempt(0)
    assert early.begin(s, b, 0.0) and not early.trial  # closed: no slot taken
    other = Attempt(0)
    assert other.begin(s, b, 0.0)
    other.fail(0.1, "reset")  # opens the breaker
    trial = Attempt(0)
    assert trial.begin(s, b, 10.1) and trial.trial
    early.end(10.1)  # no verdict, and it held no trial slot: the trial keeps its slot
    assert b.statistics()["trials_in_flight"] == 1
    trial.verdict(True, 10.2)
    assert b.state(10.2) == "closed"
    for a in (trial, other):
        a.end(10.3)
    assert s.active == 0


def test_retry_on_status_fails_the_try_and_holds_one_budget_slot():
    s1, s2, s3, budget = server("a"), server("b"), server("c"), RetryBudget()
    b1 = CircuitBreaker(failures=1)
    a = Attempt(2, budget)
    assert a.begin(s1, b1, 1.0)
    assert a.retry(True, True)  # decided before the try is failed (see Exchange)
    transition, _ = a.fail(1.1, "status")
    assert transition is not None and transition.new == "open"  # the retried 503 counts
    assert budget.active_retries == 1 and s1.active == 0
    assert a.begin(s2, None, 1.1)
    a.fail(1.2, "status")
    assert a.retry(True, True)  # the second retry keeps the same slot
    assert budget.active_retries == 1
    assert a.begin(s3, None, 1.2)
    assert not a.retry(True, True)  # retries = 2 reached
    a.end(1.3)
    settled(a, s1, s2, s3, budget=budget)
    assert a.retries == 2


def test_a_budget_with_no_room_refuses_the_retry_and_the_try_goes_on():
    s, budget = server(), RetryBudget(percent=0, min_retries_concurrent=0)
    a = Attempt(2, budget)
    assert a.begin(s, None, 1.0)
    assert not a.retry(True, True)
    assert s.active == 1 and a.holding  # the answer goes to the client
    a.end(2.0)
    settled(a, s, budget=budget)


def test_retry_not_allowed_for_the_method():
    s = server()
    a = Attempt(2)
    assert a.begin(s, None, 1.0)
    a.fail(1.1, "reset")
    assert not a.retry(False, True)  # e.g. a POST after its request was sent
    a.end(1.2)
    settled(a, s)


@pytest.mark.parametrize("phase", ["response", "reset"])
def test_timeout_or_reset_before_the_head_is_a_breaker_failure(phase):
    s = server(max_fails=1)
    b = CircuitBreaker(failures=2)
    a = Attempt(0)
    assert a.begin(s, b, 1.0)
    a.connected()
    assert a.fail(2.0, phase) == (None, False)  # not a connect failure: no ejection
    assert b.statistics()["consecutive_failures"] == 1 and s.available(2.0)
    a.end(2.1)
    settled(a, s)


def test_timeout_or_reset_after_the_head_keeps_the_verdict_given():
    s, b = server(), half_open()
    a = Attempt(0)
    assert a.begin(s, b, 10.0)
    a.verdict(True, 10.1)  # 200 head relayed; then the body stalls or the server resets
    a.fail(11.0, "reset")  # (an exchange ends rather than fails here: both are safe)
    a.end(11.1)
    settled(a, s)
    assert b.state(11.1) == "closed"


def test_head_response_is_a_verdict_and_an_end():
    s, b = server(), half_open()
    a = Attempt(0)
    assert a.begin(s, b, 10.0)
    a.verdict(True, 10.1)  # HEAD: the head is the whole answer
    a.end(10.1)
    settled(a, s)
    assert b.state(10.1) == "closed"


def test_upgrade_holds_the_server_until_the_tunnel_ends():
    s, b = server(), CircuitBreaker()
    a = Attempt(0)
    assert a.begin(s, b, 1.0)
    a.verdict(True, 1.1)  # 101
    assert s.active == 1
    a.end(500.0)  # the tunnel closed much later
    settled(a, s)


def test_a_5xx_answer_is_a_failure_and_a_second_verdict_is_ignored():
    s, b = server(), CircuitBreaker(failures=1)
    a = Attempt(0)
    assert a.begin(s, b, 1.0)
    assert a.verdict(False, 1.1).new == "open"
    assert a.verdict(True, 1.2) is None
    a.end(1.3)
    settled(a, s)
    assert b.state(1.3) == "open"


def test_begin_twice_without_failing_is_a_bug():
    s = server()
    a = Attempt(1)
    assert a.begin(s, None, 0.0)
    with pytest.raises(RuntimeError):
        a.begin(s, None, 0.0)


def test_no_retry_after_the_end():
    s = server()
    a = Attempt(3)
    assert a.begin(s, None, 0.0)
    a.end(0.1)
    assert not a.retry(True, False)
    settled(a, s)
