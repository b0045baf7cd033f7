"""The HTTP exchange's bookkeeping, in memory: an engine built as bench/http_inproc.py builds
it, the client and server connections on fake transports, and an event loop whose clock is
a number the test moves (so the breaker's cool-off and the response timeout pass on demand,
without sleeping). New server connections are made by the loop's `create_connection`, which
here either refuses (as a closed port does) or hands back a fake transport.

After each scenario the holdings of the attempt are checked: `server.active`, the breaker's
trial slots, the pool's retry budget. Regression tests for issue 17 (both bugs) live here.
"""

from __future__ import annotations

import asyncio
import selectors

import pytest

from l4lb.accesslog import AccessLog
from l4lb.config.load import load_text
from l4lb.pool import build_pools
from l7.engine import HttpEngine, UpstreamRegistry
from l7.h1 import H1Server


class FakeTransport(asyncio.Transport):
    def __init__(self, protocol: asyncio.Protocol | None = None) -> None:
        super().__init__()
        self.protocol = protocol
        self.data = b""
        self.closed = False

    def write(self, data: bytes) -> None:
        self.data += data

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.abort()

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            if self.protocol is not None:
                self.protocol.connection_lost(None)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def take(self) -> bytes:
        data, self.data = self.data, b""
        return data


class FakeLoop(asyncio.SelectorEventLoop):
    """A real loop with a clock the test sets and servers that exist only in memory:
    `refusing` ports refuse, others accept; `made` keeps each (port, protocol, transport)."""

    def __init__(self) -> None:
        super().__init__(selectors.DefaultSelector())
        self.now = 1000.0
        self.refusing: set[int] = set()
        self.hanging: set[int] = set()  # connects to these never complete
        self.made: list[tuple[int, asyncio.Protocol, FakeTransport]] = []

    def time(self) -> float:
        return self.now

    async def create_connection(self, factory, host=None, port=None, **kw):  # type: ignore[override]
        if port in self.refusing:
            raise ConnectionRefusedError(111, "Connection refused")
        if port in self.hanging:
            await self.create_future()
        protocol = factory()
        transport = FakeTransport(protocol)
        protocol.connection_made(transport)
        self.made.append((port, protocol, transport))
        return transport, protocol

    def settle(self) -> None:
        """Run what is ready (connect tasks, call_soon callbacks) and timers now due."""
        for _ in range(20):
            self.run_until_complete(asyncio.sleep(0))

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.settle()


CONFIG = """
[global]
access_log = false
[listener.web]
bind = "127.0.0.1:8080"
protocol = "http"
pool = "p"
[pool.p]
retries = {retries}
{pool_extra}
[pool.p.passive]
max_fails = 0
[pool.p.http]
response_timeout = "5s"
breaker_failures = {failures}
breaker_cool_off = "10s"
breaker_half_open = 1
{http_extra}
[[pool.p.servers]]
name = "a"
address = "127.0.0.1:9001"
{more_servers}
"""

SERVER_B = '[[pool.p.servers]]\nname = "b"\naddress = "127.0.0.1:9002"\n'
GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
HEAD = b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
FAIL_CLOSE = b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
UNAVAILABLE = b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n"


class Harness:
    def __init__(self, retries=0, failures=1, two=False, http_extra="", pool_extra=""):
        self.loop = FakeLoop()
        asyncio.set_event_loop(self.loop)
        text = CONFIG.format(
            retries=retries,
            failures=failures,
            http_extra=http_extra,
            pool_extra=pool_extra,
            more_servers=SERVER_B if two else "",
        )
        config = load_text(text, "harness.toml")
        self.pools = build_pools(config.pools, {}, self.loop.time())
        log = AccessLog()
        log.enabled = False
        self.registry = UpstreamRegistry(self.loop)
        self.engine = HttpEngine(config.listeners[0], self.pools, self.registry, {}, log, None)
        self.pool = self.pools["p"]
        self.servers = {s.name: s for s in self.pool.servers}

    def close(self) -> None:
        self.loop.settle()
        asyncio.set_event_loop(None)
        self.loop.close()

    def client(self) -> tuple[H1Server, FakeTransport]:
        proto = H1Server(lambda: self.engine, ("127.0.0.1", 40000))
        transport = FakeTransport(proto)
        proto.connection_made(transport)
        return proto, transport

    def request(self, raw: bytes = GET) -> tuple[H1Server, FakeTransport]:
        proto, transport = self.client()
        proto.data_received(raw)
        self.loop.settle()
        return proto, transport

    def server_conn(self, index: int = -1):
        return self.loop.made[index][1]

    def answer(self, response: bytes, index: int = -1) -> None:
        self.server_conn(index).data_received(response)
        self.loop.settle()

    def breaker(self, name: str = "a"):
        return self.registry.breakers[("p", name)]

    def active(self) -> dict[str, int]:
        return {name: s.active for name, s in self.servers.items()}

    def budget(self) -> tuple[int, int]:
        b = self.registry.budgets["p"]
        return b.active_requests, b.active_retries


@pytest.fixture
def make():
    made: list[Harness] = []

    def build(**kw) -> Harness:
        h = Harness(**kw)
        made.append(h)
        return h

    yield build
    for h in made:
        h.close()


def status_of(transport: FakeTransport) -> int:
    data = transport.data
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0


# -- issue 17, bug 1: active goes negative ---------------------------------------------------


def test_refused_connect_answers_502_and_active_stays_at_zero(make):
    h = make()
    h.loop.refusing.add(9001)
    _, client = h.request()
    assert status_of(client) == 502
    assert h.active() == {"a": 0}
    assert h.budget() == (0, 0)


def test_refused_connect_with_a_retry_answers_503_and_active_stays_at_zero(make):
    h = make(retries=1)
    h.loop.refusing.add(9001)
    _, client = h.request()
    assert status_of(client) == 503  # the retry finds no other server
    assert h.active() == {"a": 0}
    assert h.budget() == (0, 0)


def test_connect_failure_then_success_on_another_server(make):
    h = make(retries=1, two=True, pool_extra='balance = "round_robin"')
    h.loop.refusing.add(9001)
    _, client = h.request()
    assert h.loop.made[-1][0] == 9002
    assert h.active() == {"a": 0, "b": 1}
    h.answer(OK)
    assert status_of(client) == 200
    assert h.active() == {"a": 0, "b": 0}


# -- issue 17, bug 2: the breaker wedges half-open -------------------------------------------


def open_breaker(h: Harness) -> None:
    _, client = h.request()
    h.answer(FAIL_CLOSE)  # (no keep-alive connection left: the next request connects)
    assert status_of(client) == 500
    assert h.breaker().state(h.loop.now) == "open"


def test_trial_that_fails_to_connect_does_not_wedge_the_breaker(make):
    """The issue's sequence: 500s open the breaker; the cool-off passes while the server
    refuses; the trial gets 502; the server recovers. The requests after must reach it."""
    h = make()
    open_breaker(h)
    h.loop.refusing.add(9001)
    h.loop.advance(11)
    _, client = h.request()
    assert status_of(client) == 502
    assert h.breaker().state(h.loop.now) == "open"  # the failed trial re-opened it
    h.loop.refusing.clear()
    h.loop.advance(11)
    _, client = h.request()
    h.answer(OK)
    assert status_of(client) == 200
    assert h.breaker().state(h.loop.now) == "closed"
    _, client = h.request()
    h.answer(OK)
    assert status_of(client) == 200
    assert h.active() == {"a": 0}


def test_trial_whose_client_leaves_gives_its_slot_back(make):
    h = make()
    open_breaker(h)
    h.loop.advance(11)
    _, client = h.request()
    assert h.breaker().statistics()["trials_in_flight"] == 1
    client.abort()  # the client goes away before the server answers
    h.loop.settle()
    assert h.breaker().statistics()["trials_in_flight"] == 0
    assert h.active() == {"a": 0}
    _, client = h.request()  # the next request is the trial
    h.answer(OK)
    assert status_of(client) == 200
    assert h.breaker().state(h.loop.now) == "closed"


# -- every exit path leaves nothing held -----------------------------------------------------


def test_success_on_a_pooled_connection(make):
    h = make()
    proto, client = h.request()
    h.answer(OK)
    assert status_of(client) == 200 and h.active() == {"a": 0}
    client.take()
    proto.data_received(GET)  # the same client, the pooled server connection
    h.loop.settle()
    assert len(h.loop.made) == 1 and h.active() == {"a": 1}
    h.answer(OK)
    assert status_of(client) == 200 and h.active() == {"a": 0}
    assert h.budget() == (0, 0)


def test_no_server_available(make):
    h = make()
    h.servers["a"].draining = True
    _, client = h.request()
    assert status_of(client) == 503 and h.active() == {"a": 0}
    assert h.budget() == (0, 0)


def test_retry_on_status_goes_to_the_other_server(make):
    h = make(
        retries=1, two=True, http_extra="retry_on = [503]", pool_extra='balance = "round_robin"'
    )
    _, client = h.request()
    first = h.loop.made[-1][0]
    h.answer(UNAVAILABLE)
    assert len(h.loop.made) == 2 and h.loop.made[-1][0] != first
    assert sum(h.active().values()) == 1 and h.budget() == (1, 1)
    h.answer(OK)
    assert status_of(client) == 200
    assert h.active() == {"a": 0, "b": 0} and h.budget() == (0, 0)


def test_retry_on_status_refused_by_the_budget_relays_the_answer(make):
    h = make(retries=1, two=True, http_extra="retry_on = [503]\nretry_budget = 0")
    h.registry.budget(h.pool).min_retries_concurrent = 0
    _, client = h.request()
    h.answer(UNAVAILABLE)
    assert status_of(client) == 503 and len(h.loop.made) == 1
    assert h.active() == {"a": 0, "b": 0} and h.budget() == (0, 0)


def test_response_timeout_answers_504(make):
    h = make(failures=2)
    _, client = h.request()
    assert h.active() == {"a": 1}
    h.loop.advance(6)
    assert status_of(client) == 504
    assert h.active() == {"a": 0}
    assert h.breaker().statistics()["consecutive_failures"] == 1


def test_reset_before_the_head_answers_502(make):
    h = make()
    _, client = h.request()
    h.loop.made[-1][2].abort()  # the server closes the connection
    h.loop.settle()
    assert status_of(client) == 502 and h.active() == {"a": 0}


def test_reset_in_the_body_aborts_the_client_and_releases(make):
    h = make()
    _, client = h.request()
    h.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    assert h.active() == {"a": 1}
    h.loop.made[-1][2].abort()
    h.loop.settle()
    assert client.closed and h.active() == {"a": 0}
    assert h.breaker().state(h.loop.now) == "closed"


def test_client_leaves_while_the_body_streams(make):
    h = make()
    _, client = h.request()
    h.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    assert h.active() == {"a": 1}
    client.abort()
    h.loop.settle()
    assert h.active() == {"a": 0} and h.budget() == (0, 0)


def test_client_leaves_before_the_connect_completes(make):
    h = make()
    proto, client = h.client()
    proto.data_received(GET)  # the connect task has not run yet
    assert h.active() == {"a": 1}
    client.abort()
    h.loop.settle()  # the connection made afterwards is dropped
    assert h.active() == {"a": 0} and h.budget() == (0, 0)


def test_head_request(make):
    h = make()
    _, client = h.request(HEAD)
    h.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n")
    assert status_of(client) == 200 and h.active() == {"a": 0}


def test_upgrade_holds_the_server_until_the_tunnel_ends(make):
    h = make()
    raw = b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    _, client = h.request(raw)
    h.answer(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    )
    assert status_of(client) == 101 and h.active() == {"a": 1}
    client.abort()  # the client ends the tunnel
    h.loop.settle()
    assert h.active() == {"a": 0} and h.budget() == (0, 0)


def test_shutdown_cancels_connects_under_way_and_nothing_stays_held(make):
    h = make()
    h.loop.hanging.add(9001)
    _, client = h.request()
    (up,) = h.registry.pools.values()
    assert len(up.connecting) == 1 and h.active() == {"a": 1}
    h.registry.close()  # the runtime's shutdown
    h.loop.settle()
    assert not up.connecting and status_of(client) == 502
    assert h.active() == {"a": 0} and h.budget() == (0, 0)
