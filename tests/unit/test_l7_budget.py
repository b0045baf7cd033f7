"""Retry budget arithmetic and the retryability matrix."""

from __future__ import annotations

import pytest

from l7.budget import IDEMPOTENT_METHODS, RetryBudget, is_retryable

STATUSES = frozenset({502, 503, 504})


def budget_with(active: int, **kwargs: float) -> RetryBudget:
    budget = RetryBudget(**kwargs)  # type: ignore[arg-type]
    for _ in range(active):
        budget.on_request_start()
    return budget


def acquired(budget: RetryBudget) -> int:
    count = 0
    while budget.try_acquire_retry():
        count += 1
    return count


@pytest.mark.parametrize(
    ("active", "percent", "minimum", "expected"),
    [
        (0, 20.0, 3, 3),  # idle pool: the floor
        (10, 20.0, 3, 3),  # 20% of 10 is 2, below the floor
        (15, 20.0, 3, 3),
        (20, 20.0, 3, 4),
        (24, 20.0, 3, 4),  # floor(4.8)
        (100, 20.0, 3, 20),
        (100, 0.0, 0, 0),  # retries off
        (7, 100.0, 0, 7),
        (1000, 12.5, 3, 125),
    ],
)
def test_limit_is_the_larger_of_floor_and_share(
    active: int, percent: float, minimum: int, expected: int
) -> None:
    budget = budget_with(active, percent=percent, min_retries_concurrent=minimum)
    assert budget.limit() == expected
    assert acquired(budget) == expected
    assert budget.active_retries == expected


def test_released_retries_make_room_again() -> None:
    budget = budget_with(0, percent=20.0, min_retries_concurrent=2)
    assert acquired(budget) == 2
    budget.release_retry()
    assert budget.try_acquire_retry()
    assert not budget.try_acquire_retry()


def test_budget_follows_active_requests_down() -> None:
    budget = budget_with(50, percent=20.0, min_retries_concurrent=3)
    assert acquired(budget) == 10
    for _ in range(40):
        budget.on_request_end()
    assert budget.limit() == 3
    for _ in range(7):
        budget.release_retry()
    assert not budget.try_acquire_retry()  # 3 in flight, limit 3
    budget.release_retry()
    assert budget.try_acquire_retry()
    assert budget.statistics() == {"active_requests": 10, "active_retries": 3, "retry_limit": 3}


def test_counters_never_go_negative() -> None:
    budget = RetryBudget()
    budget.on_request_end()
    budget.release_retry()
    assert (budget.active_requests, budget.active_retries) == (0, 0)


@pytest.mark.parametrize(
    "kwargs", [{"percent": -1.0}, {"percent": 101.0}, {"min_retries_concurrent": -1}]
)
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryBudget(**kwargs)  # type: ignore[arg-type]


# -- is_retryable ---------------------------------------------------------------------------------

ALL_METHODS = ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE", "POST", "PATCH", "CONNECT"]


def test_idempotent_methods_are_rfc_9110_list() -> None:
    assert frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"}) == IDEMPOTENT_METHODS


@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("replayable", [True, False])
def test_connect_failures_are_always_retryable(method: str, replayable: bool) -> None:
    assert is_retryable(method, "connect", None, STATUSES, body_replayable=replayable)


@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("replayable", [True, False])
@pytest.mark.parametrize(
    ("phase", "status"),
    [
        ("reset", None),
        ("status", 502),
        ("status", 503),
        ("status", 504),
        ("status", 500),
        ("status", 404),
        ("status", None),
        ("response", None),
        ("response", 503),
    ],
)
def test_matrix(method: str, replayable: bool, phase: str, status: int | None) -> None:
    expected = (
        method in {"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"}
        and replayable
        and (phase == "reset" or (phase == "status" and status in STATUSES))
    )
    got = is_retryable(method, phase, status, STATUSES, body_replayable=replayable)  # type: ignore[arg-type]
    assert got is expected


def test_post_is_never_retried_after_it_was_sent() -> None:
    assert not is_retryable("POST", "reset", None, STATUSES, body_replayable=True)
    assert not is_retryable("POST", "status", 503, STATUSES, body_replayable=True)


def test_method_names_are_case_sensitive() -> None:
    assert not is_retryable("get", "reset", None, STATUSES)


def test_statuses_come_from_the_caller() -> None:
    assert is_retryable("GET", "status", 500, {500})
    assert not is_retryable("GET", "status", 503, set())
