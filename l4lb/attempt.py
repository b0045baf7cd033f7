"""One owner for the tries of one TCP connection or one HTTP request on a pool's servers.

A try takes four things, and each must be given back exactly once, whatever way it ends:

- the server's `active` count (least_conn and `max_connections` read it; with workers,
  this worker's cell of the instance's count too, `l4lb.shared.servers`),
- the breaker's verdict (an HTTP server's `CircuitBreaker`: a half-open breaker lends a trial
  slot, given back by a success, a failure or an abandonment),
- the retry budget (the pool's `RetryBudget`: the request counts as active from its first
  try to its end; a retry holds a slot while that retry is in flight, as Envoy counts
  `retry_budget`),
- the passive check (nginx's max_fails: a connect failure adds to the server's streak, a
  connect resets it).

Before this object, the L4 session and the L7 exchange each did this by hand on every exit
path, and got some wrong: a failed HTTP try was subtracted from `active` twice, and a
half-open trial that ended in a connect failure or a client abort kept its slot for ever,
wedging the breaker half-open. Here every path goes through `fail` (this try is over, badly)
or `end` (the request or connection is over), and both are idempotent for what they release.

    attempt = Attempt(pool.config.retries, budget)
    while (server := pool.pick(now, key, attempt.tried)) is not None:
        if attempt.begin(server, breaker_of(server), now):
            break                      # connect...
    attempt.connected()                # the passive check: a connect
    attempt.verdict(status < 500, now) # the breaker's outcome, once the response head is in
    attempt.fail(now, "connect")       # or: this try failed; then `retry(...)` says if
    attempt.end(now)                   # always, once: gives back whatever is still held

Pure: no sockets, no clock (`now` is monotonic seconds, passed in). The breaker and the
budget are l7 objects, used through the small protocols below so that l4lb does not import
l7 (DESIGN.md: dependencies point down).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, Protocol

if TYPE_CHECKING:
    from l4lb.server import Server

__all__ = ["Attempt", "Breaker", "Budget"]

_TRIAL: Final = 2  # l7.breaker.TRIAL: `admit` took a half-open trial slot


class Breaker(Protocol):
    """What a try needs of `l7.breaker.CircuitBreaker`."""

    def admit(self, now: float) -> int: ...
    def on_success(self, now: float) -> Any: ...
    def on_failure(self, now: float) -> Any: ...
    def on_abandon(self, now: float) -> None: ...


class Budget(Protocol):
    """What a request needs of `l7.budget.RetryBudget`."""

    def on_request_start(self) -> None: ...
    def on_request_end(self) -> None: ...
    def try_acquire_retry(self) -> bool: ...
    def release_retry(self) -> None: ...


class Attempt:
    """The tries of one connection or request. `server` is the server of the current (or
    last) try, for logs; `tried` the servers not to pick again; `retries` the tries after the
    first. Not thread-safe (one event loop)."""

    __slots__ = (
        "breaker",
        "budget",
        "ended",
        "holding",
        "max_retries",
        "retries",
        "retry_slot",
        "server",
        "trial",
        "tried",
        "verdict_due",
    )

    def __init__(self, max_retries: int, budget: Budget | None = None) -> None:
        self.max_retries = max_retries
        self.budget = budget
        if budget is not None:
            budget.on_request_start()
        self.server: Server | None = None
        self.breaker: Breaker | None = None
        self.tried: tuple[Server, ...] = ()  # a tuple: no allocation on the usual path
        self.retries = 0
        self.holding = False  # the current try holds `server.active`
        self.verdict_due = False  # the current try owes its breaker an outcome
        self.trial = False  # ... and holds one of its half-open trial slots
        self.retry_slot = False  # a retry-budget slot (held from the first retry to the end)
        self.ended = False

    # -- a try -------------------------------------------------------------------------------

    def begin(self, server: Server, breaker: Breaker | None, now: float) -> bool:
        """Try `server` (which the pool picked): True if its breaker lets the request through,
        and then its `active` count is taken. False: the breaker is open (or its trial slots
        are taken), and the server counts as tried; pick another."""
        if self.holding:
            raise RuntimeError("Attempt.begin: the previous try was not ended")
        if breaker is not None:
            admitted = breaker.admit(now)
            if not admitted:
                self.tried = (*self.tried, server)
                return False
            self.trial = admitted == _TRIAL
            self.verdict_due = True
        else:
            self.trial = self.verdict_due = False
        self.server = server
        self.breaker = breaker
        server.active += 1
        if server.shared is not None:  # workers > 1: our cell of the instance's count
            server.shared.active[server.cell] += 1
        server.total += 1
        self.holding = True
        return True

    def connected(self) -> None:
        """The try reached its server (or took one of its keep-alive connections): the
        passive check's failure streak starts again."""
        server = self.server
        if server is not None:
            server.fail_streak = 0  # (Server.on_connected, inlined: once per request)

    def verdict(self, ok: bool, now: float) -> Any:
        """The try's outcome for the breaker (HTTP: the final response head; a 5xx is a
        failure), given once; later calls do nothing. Returns the breaker's transition, if
        the outcome caused one. The try keeps `active` until `end` (the body still flows)."""
        if not self.verdict_due:
            return None
        self.verdict_due = self.trial = False
        breaker = self.breaker
        assert breaker is not None
        return breaker.on_success(now) if ok else breaker.on_failure(now)

    def fail(self, now: float, phase: str) -> tuple[Any, bool]:
        """The current try failed before an answer reached the client: `phase` is "connect"
        (nothing reached the server), "reset", "response" (timeout) or "status" (a status
        the pool retries). Gives back everything the try held; the breaker hears a failure
        (Envoy's consecutive_5xx counts connect failures and timeouts too), the passive check
        a connect failure. Returns (the breaker's transition or None, whether the passive
        check ejected the server). Call `retry` next to know whether to try again."""
        server = self.server
        transition = self.verdict(False, now) if self.verdict_due else None
        ejected = False
        if server is not None and self.holding:
            self.holding = False
            server.active -= 1
            if server.shared is not None:
                server.shared.active[server.cell] -= 1
            if phase == "connect":
                ejected = server.on_connect_failed(now)
            self.tried = (*self.tried, server)
        return transition, ejected

    def retry(self, allowed: bool, costs_budget: bool) -> bool:
        """May the request go to another server? `allowed` is the caller's judgement
        (`l7.budget.is_retryable`; always for a TCP connect); `costs_budget` says whether this
        retry needs a slot of the pool's retry budget (HTTP retries after the connect phase).
        A request holds at most one slot, from its first such retry to its `end`, so however
        many times it is retried it counts once among the pool's retries in flight. True: a
        retry was granted; `begin` the next try (after `fail`ing this one, before or after
        this call: it does not touch the current try)."""
        if self.ended or not allowed or self.retries >= self.max_retries:
            return False
        if costs_budget and self.budget is not None and not self.retry_slot:
            if not self.budget.try_acquire_retry():
                return False
            self.retry_slot = True
        self.retries += 1
        return True

    # -- the end -----------------------------------------------------------------------------

    def end(self, now: float) -> None:
        """The connection or request is over (answered, failed, or the client left): give back
        whatever is still held. A trial that got no verdict gives its slot back to the
        breaker; a request that got no verdict otherwise tells the breaker nothing."""
        if self.ended:
            return
        self.ended = True
        if self.holding:
            self.holding = False
            server = self.server
            assert server is not None
            server.active -= 1
            if server.shared is not None:
                server.shared.active[server.cell] -= 1
        if self.verdict_due:
            self.verdict_due = False
            if self.trial:
                self.trial = False
                assert self.breaker is not None
                self.breaker.on_abandon(now)
        if self.retry_slot:
            self.retry_slot = False
            assert self.budget is not None
            self.budget.release_retry()
        if self.budget is not None:
            self.budget.on_request_end()
