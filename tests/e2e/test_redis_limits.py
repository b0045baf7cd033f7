"""Global rate limits (`scope = "global"`): l4lb instances sharing one real redis-server.

Two instances share one budget (HTTP/1.1 on one, HTTP/2 on the other); Redis killed with
SIGKILL under load, failing open and failing closed, then started again and the limit
enforced again; a Redis that does not answer in time (DEBUG SLEEP) hits the timeout.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time

import pytest

from tests.e2e.h2client import H2Client, H2Response
from tests.e2e.helpers import Proxy, free_port, pool_toml, wait_until
from tests.e2e.redisserver import RedisServer, need_redis


@pytest.fixture
def redis_server(tmp_path):
    need_redis()
    server = RedisServer(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def instances(tmp_path):
    """Start l4lb instances, each in its own folder (config and logs apart)."""
    started: list[Proxy] = []

    def start(config: str) -> Proxy:
        folder = tmp_path / f"l4lb{len(started)}"
        folder.mkdir()
        p = Proxy(folder, config)
        started.append(p)
        return p

    yield start
    for p in started:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait()


def _config(
    port: int,
    admin: int,
    backend,
    redis_port: int,
    *,
    burst: int = 4,
    on_error: str = "allow",
    h2c: bool = False,
) -> str:
    return (
        f'[admin]\nbind = "127.0.0.1:{admin}"\n'
        f'[redis]\naddress = "127.0.0.1:{redis_port}"\ntimeout = "50ms"\n'
        f'on_error = "{on_error}"\nkey_prefix = "test:"\n'
        f'[listener.web]\nbind = "127.0.0.1:{port}"\nprotocol = "http"\n'
        + ("[listener.web.http]\nh2c = true\n" if h2c else "")
        + '[[listener.web.routes]]\nname = "api"\npath_prefix = "/api"\npool = "p"\n'
        f'rate_limits = [{{name = "shared", rate = 1, per = "1m", burst = {burst}, '
        'scope = "global"}]\n'
        '[[listener.web.routes]]\nname = "main"\npool = "p"\n'
        + pool_toml("p", [f'name = "a"\naddress = "{backend.address}"'])
    )


def _get(port: int, path: str = "/api/x") -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def _h2_get(port: int, path: str = "/api/x") -> tuple[int, dict[str, str]]:
    with H2Client(port, tls=False, authority="x") as client:
        response = client.response(client.request("GET", path))
        return response.status, response.headers


def _admin(admin: int, path: str) -> bytes:
    with socket.create_connection(("127.0.0.1", admin), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.split(b"\r\n\r\n", 1)[1]


def _limit(admin: int) -> dict:
    status = json.loads(_admin(admin, "/status"))
    guards = {g["route"]: g for g in status["listeners"][0]["route_guards"]}
    return guards["api"]["limits"][0]


def _connected(*admins: int) -> None:
    """Wait for each instance's limiter to have connected (at load, in the background), so
    that the first requests do not race the connect against the 50 ms timeout."""
    for admin in admins:
        assert wait_until(lambda admin=admin: _limit(admin)["redis_connected"])


def test_two_instances_share_one_budget(instances, http_backends, redis_server):
    (a,) = http_backends("a")
    port1, admin1, port2, admin2 = free_port(), free_port(), free_port(), free_port()
    one = instances(_config(port1, admin1, a, redis_server.port))
    instances(_config(port2, admin2, a, redis_server.port, h2c=True))
    _connected(admin1, admin2)
    # A burst of 4 for 127.0.0.1, spent on both: HTTP/1.1 on one, HTTP/2 on the other.
    got = [_get(port1)[0], _h2_get(port2)[0], _get(port1)[0], _h2_get(port2)[0]]
    assert got == [200, 200, 200, 200]
    status, headers, body = _get(port1)
    assert status == 429 and b"rate limit shared" in body
    assert headers["ratelimit-policy"] == '"shared";q=1;w=60'
    assert re.fullmatch(r'"shared";r=0;t=\d+', headers["ratelimit"])
    assert 1 <= int(headers["retry-after"]) <= 60
    status, h2_headers = _h2_get(port2)
    assert status == 429 and h2_headers["ratelimit-policy"] == '"shared";q=1;w=60'
    assert _get(port1, "/other")[0] == 200  # a route without the limit
    # One key in Redis, with an expiry (the TAT: at most 4 minutes ahead).
    keys = redis_server.command("KEYS", "test:*")
    assert b"test:web:api:shared:{127.0.0.1}" in keys
    ttl = int(redis_server.command("PTTL", "test:web:api:shared:{127.0.0.1}")[1:])
    assert 0 < ttl <= 4 * 60_000
    assert one.wait_log(r"route api: 127\.0\.0\.1 over rate limit shared \(429\)")
    limit = _limit(admin1)
    assert limit["scope"] == "global" and limit["requests"] == 3 and limit["rejected"] == 1
    assert limit["redis_errors"] == 0 and limit["redis_up"] is True
    assert _limit(admin2)["rejected"] == 1
    metrics = _admin(admin1, "/metrics")
    assert b'l4lb_route_ratelimit_rejected_total{listener="web",route="api",limit="shared"} 1' in (
        metrics
    )
    labels = b'{listener="web",route="api",limit="shared"}'
    assert b"l4lb_route_ratelimit_redis_errors_total" + labels + b" 0" in metrics
    assert b"l4lb_route_ratelimit_redis_up" + labels + b" 1" in metrics


class _Load:
    """Clients in threads sending requests until stopped (bounded in time), counting the
    statuses they get; a connection l4lb failed to answer counts as 0."""

    def __init__(self, port: int, threads: int = 3, seconds: float = 30.0) -> None:
        self.port = port
        self.statuses: list[int] = []
        self.stop = threading.Event()
        self.deadline = time.monotonic() + seconds
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def _run(self) -> None:
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            try:
                self.statuses.append(_get(self.port)[0])
            except (OSError, ValueError, IndexError):
                self.statuses.append(0)
            time.sleep(0.01)

    def finish(self) -> list[int]:
        self.stop.set()
        for t in self.threads:
            t.join(15)
        return self.statuses


def _until(predicate, tries: int = 300) -> bool:
    """Try `predicate` up to `tries` times, 20 ms apart."""
    for _ in range(tries):
        if predicate():
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize("on_error", ["allow", "deny"])
def test_redis_killed_and_restarted(instances, http_backends, redis_server, on_error):
    (a,) = http_backends("a")
    port, admin = free_port(), free_port()
    config = _config(port, admin, a, redis_server.port, burst=2, on_error=on_error, h2c=True)
    p = instances(config)
    _connected(admin)
    first = [_get(port) for _ in range(3)]
    assert [f[0] for f in first] == [200, 200, 429], (first, p.log())
    load = _Load(port)
    assert wait_until(lambda: len(load.statuses) >= 5)
    redis_server.kill()
    # Fail open: requests pass although the budget is spent; fail closed: 503.
    expected = 200 if on_error == "allow" else 503
    assert _until(lambda: _get(port)[0] == expected), p.log()
    status, headers, body = _get(port)
    assert status == expected
    if on_error == "deny":
        assert headers["retry-after"] == "1" and b"rate limit store unavailable" in body
        assert "ratelimit" not in headers  # not the client's fault: no made-up budget
        assert _h2_status(port) == 503
    assert p.wait_log(r"redis 127\.0\.0\.1:\d+: .*global rate limits: requests")
    limit = _limit(admin)
    assert limit["redis_up"] is False and limit["on_error"] >= 1
    assert limit["redis_errors"] + limit["redis_timeouts"] >= 1
    redis_server.start()  # empty: no persistence, so the budget starts again
    assert p.wait_log(r"redis 127\.0\.0\.1:\d+: answering again")
    # Enforced again: the load and these requests spend the new burst of 2, then 429.
    assert _until(lambda: _get(port)[0] == 429), p.log()
    statuses = load.finish()
    assert 0 not in statuses  # every request under load got an answer
    assert set(statuses) <= {200, 429, expected}
    assert expected in statuses and 429 in statuses
    assert p.proc.poll() is None
    # A decision of the load may still have timed out (50 ms) just after the restart on a
    # busy machine, marking Redis down again; the probe brings it back: wait for that.
    assert wait_until(lambda: _limit(admin)["redis_up"] is True), p.log()


def _h2_status(port: int) -> int:
    return _h2_get(port)[0]


def test_slow_redis_hits_the_timeout(instances, http_backends, redis_server):
    (a,) = http_backends("a")
    port, admin = free_port(), free_port()
    p = instances(_config(port, admin, a, redis_server.port, burst=2, on_error="deny"))
    _connected(admin)
    assert _get(port)[0] == 200
    # Redis stops answering for 2 s (it is single-threaded): each decision in that time
    # waits 50 ms, then on_error decides (503 here), and probes find it back afterwards.
    sleeper = redis_server.send_and_leave("DEBUG", "SLEEP", "2")
    try:
        assert _until(lambda: _get(port)[0] == 503, tries=50)
        assert p.wait_log(r"redis 127\.0\.0\.1:\d+: no answer within 50 ms")
        assert _limit(admin)["redis_timeouts"] >= 1
        assert sleeper.recv(100) == b"+OK\r\n"  # the sleep is over
    finally:
        sleeper.close()
    assert p.wait_log(r"answering again")
    # Enforced again. (The decision that timed out may still have been counted: its script
    # reached Redis and ran after the sleep, as any request that times out may have been
    # done; so the burst of 2 may be spent already.)
    seen: list[int] = []
    assert _until(lambda: seen.append(_get(port)[0]) or seen[-1] == 429), seen
    assert set(seen) <= {200, 429} and seen.count(200) <= 1


def test_script_matches_the_local_gcra(redis_server):
    """The Lua script against real Redis gives what l4lb.gcra gives at one instant (a slow
    rate, so the time the calls take does not matter): same allowed, remaining, retry."""
    import redis

    from l4lb.gcra import KeyedGcra
    from l7.redisgcra import SCRIPT, decision, script_args

    client = redis.Redis(host="127.0.0.1", port=redis_server.port)
    try:
        script = client.register_script(SCRIPT)
        local = KeyedGcra(1, 60.0, 3)
        for _ in range(5):
            got = decision(script(keys=["k"], args=list(script_args(1, 60.0, 3))))
            want = local.check("k", 0.0)
            assert (got.allowed, got.remaining) == (want.allowed, want.remaining)
            assert abs(got.retry_after - want.retry_after) < 1.0
            assert abs(got.reset - want.reset) < 1.0
        assert 0 < client.pttl("k") <= 180_000
        client.script_flush()  # EVALSHA of an unknown script: redis-py loads it again
        assert decision(script(keys=["k"], args=[60_000_000, 3])).allowed is False
    finally:
        client.close()


def test_concurrent_requests_share_a_pipeline(instances, http_backends, redis_server):
    """Six HTTP/2 requests sent at once reach the guard in one turn of the loop: their six
    decisions go to Redis in one pipeline, after a SCRIPT FLUSH (so the script is loaded
    again in that path), and exactly the burst of 4 passes."""
    (a,) = http_backends("a")
    port, admin = free_port(), free_port()
    instances(_config(port, admin, a, redis_server.port, h2c=True))
    _connected(admin)
    assert redis_server.command("SCRIPT", "FLUSH") == b"+OK\r\n"
    with H2Client(port, tls=False, authority="x") as client:
        fields = [
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", "x"),
            (":path", "/api/x"),
        ]
        sids = []
        for _ in range(6):  # headers queued, then written in one send
            sid = client.conn.get_next_available_stream_id()
            client.streams[sid] = H2Response()
            client.conn.send_headers(sid, [(n.encode(), v.encode()) for n, v in fields], True)
            sids.append(sid)
        client.flush()
        statuses = sorted(client.response(sid).status for sid in sids)
    assert statuses == [200, 200, 200, 200, 429, 429]
    limit = _limit(admin)
    assert limit["requests"] == 6 and limit["rejected"] == 2 and limit["redis_errors"] == 0


def test_redis_cluster(instances, http_backends, tmp_path):
    """`cluster = true`: the client finds the node holding the key's slot (a one-node
    Redis Cluster here); decisions one at a time and in a pipeline both work."""
    cluster = RedisServer(tmp_path, cluster=True)
    try:
        (a,) = http_backends("a")
        port, admin = free_port(), free_port()
        config = _config(port, admin, a, cluster.port, burst=3, h2c=True)
        instances(config.replace("[redis]\n", "[redis]\ncluster = true\n"))
        # Connected at load, in the background (the cluster's slots learnt): a first request
        # that came before would get on_error if that took over the 50 ms timeout.
        _connected(admin)
        assert [_get(port)[0] for _ in range(2)] == [200, 200]
        with H2Client(port, tls=False, authority="x") as client:
            sids = [client.request("GET", "/api/x") for _ in range(2)]
            statuses = sorted(client.response(sid).status for sid in sids)
        assert statuses == [200, 429]
        assert b"test:web:api:shared:{127.0.0.1}" in cluster.command("KEYS", "test:*")
        assert _limit(admin)["redis_errors"] == 0
    finally:
        cluster.stop()


def test_request_body_waits_for_the_decision(instances, http_backends, redis_server):
    """A POST whose body (300 KB, over the 256 KB held while waiting) arrives while the
    decision is in Redis reaches the server whole; the keep-alive connection goes on."""
    import hashlib

    (a,) = http_backends("a")
    port, admin = free_port(), free_port()
    config = _config(port, admin, a, redis_server.port).replace('"/api"', '"/digest"')
    instances(config)
    _connected(admin)
    body = bytes(range(256)) * 1200
    head = f"POST /digest HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head + body + b"GET /digest HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert f"{len(body)} {hashlib.sha256(body).hexdigest()}".encode() in data
    assert data.count(b"HTTP/1.1 200 ") == 2 and data.endswith(
        b"0 " + hashlib.sha256().hexdigest().encode()
    )
    assert _limit(admin)["requests"] == 2


def test_workers_share_the_budget_too(instances, http_backends, redis_server):
    """`workers = 2`: both worker processes count in the same Redis key, so twelve new
    connections (spread over the workers by SO_REUSEPORT) get the burst of 4 in all."""
    (a,) = http_backends("a")
    port, admin = free_port(), free_port()
    config = _config(port, admin, a, redis_server.port).replace(
        'timeout = "50ms"', 'timeout = "1s"'
    )
    instances("[global]\nworkers = 2\n" + config)
    assert wait_until(lambda: len(json.loads(_admin(admin, "/status")).get("workers", ())) == 2)
    statuses = [_get(port)[0] for _ in range(12)]
    assert sorted(statuses) == [200] * 4 + [429] * 8

    def both_served() -> bool:
        workers = json.loads(_admin(admin, "/status"))["workers"]
        return all(w["total"] > 0 for w in workers)

    assert wait_until(both_served)  # (all twelve on one worker: a 1 in 2048 chance)


def test_reload(instances, http_backends, redis_server):
    """A reload that keeps [redis] keeps its limiter (still 429: not `on_error`); one that
    changes it (a new key prefix here) retires the old limiter and counts anew."""
    (a,) = http_backends("a")
    port, admin = free_port(), free_port()
    config = _config(port, admin, a, redis_server.port, burst=1)
    p = instances(config)
    _connected(admin)
    assert [_get(port)[0] for _ in range(2)] == [200, 429]
    assert p.reload(config + "\n")
    assert _get(port)[0] == 429
    limit = _limit(admin)
    assert limit["on_error"] == 0 and limit["requests"] == 3  # counters kept too
    assert p.reload(config.replace('key_prefix = "test:"', 'key_prefix = "new:"'))
    _connected(admin)
    assert [_get(port)[0] for _ in range(2)] == [200, 429]
    assert b"new:web:api:shared:{127.0.0.1}" in redis_server.command("KEYS", "new:*")
    assert p.proc.poll() is None and "Traceback" not in p.log()
