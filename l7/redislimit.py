"""The Redis client behind `scope = "global"` rate limits (the IO half of l7.redisgcra).

One `RedisLimiter` per worker process and `[redis]` config, shared by every global limit of
every listener, kept across reloads while `[redis]` is unchanged (it lives in the runtime's
registry, l7.engine). The client is redis-py's asyncio one (with hiredis parsing replies),
so nothing here blocks the loop: a decision runs the GCRA script (EVALSHA, and SCRIPT LOAD
then EVALSHA again when Redis does not know it), under a deadline of `[redis] timeout`, and
hands its outcome to a callback. The decisions asked for in one turn of the loop go out
together, one EVALSHA each in one pipeline (one round trip, one task): under load that is
what keeps the client's cost per decision low (redis-py's asyncio client spends about 80 µs
of CPU on a lone command, under 20 µs per command in a pipeline: bench/redis_inproc.py).

When Redis fails (refused, reset, an error reply, or no answer in time), the decision's
callback gets "error" or "timeout" and the limiter marks Redis down: until one background
probe (PING, with backoff, l7.redisgcra.RedisHealth) gets an answer, `decide` says False at
once and the caller applies `on_error` without waiting out a timeout per request. A log line
at most every 10 s while down, one when Redis is back. Nothing raised by Redis or the
network leaves this module: the proxy keeps serving whatever Redis does.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from l4lb.gcra import Decision
from l7.redisconf import RedisConfig
from l7.redisgcra import SCRIPT, RedisHealth, decision

__all__ = ["RedisLimiter", "redis_key"]

log = logging.getLogger("l4lb")

#: What `done` gets: a Decision, or "error" / "timeout" when Redis gave none.
Outcome = Decision | str

_LONG_KEY = 128  # values longer than this are hashed into the key (a header can be 32 KiB)


def redis_key(prefix: str, value: str) -> str:
    """`prefix` plus the counted value as the hash tag, so Redis Cluster places each
    client's keys by the client (see l7.redisgcra)."""
    if len(value) > _LONG_KEY or "}" in value:
        value = hashlib.sha1(value.encode("utf-8", "surrogateescape")).hexdigest()
    return f"{prefix}{{{value}}}"


class RedisLimiter:
    """Decisions for global limits through one Redis (or Redis Cluster)."""

    def __init__(self, config: RedisConfig) -> None:
        self.config = config
        self.where = ", ".join(str(a) for a in config.addresses)
        self.health = RedisHealth()
        self.client: Any = None  # made at the first decision, on the running loop
        self.sha = hashlib.sha1(SCRIPT.encode()).hexdigest()
        self.queue: list[tuple[str, tuple[int, int], Callable[[Outcome], None]]] = []
        self.tasks: set[asyncio.Task] = set()
        self.probing = False
        self.closed = False
        self.connected = False  # an answer came (warm-up, decision or probe)

    def warm_up(self) -> None:
        """Connect and load the script now, in the background (at load, on the running
        loop), so the first requests do not spend their timeout on it (a Redis Cluster's
        client also learns the cluster's nodes and slots first). A failure marks Redis down
        like any other, with the log line and the probe."""
        if self.client is None:
            self._connect()
        task = asyncio.get_running_loop().create_task(self._warm_up())
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    async def _warm_up(self) -> None:
        try:
            async with asyncio.timeout(max(self.config.timeout, 1.0)):
                await self.client.script_load(SCRIPT)
        except TimeoutError:
            self._failed("no answer to SCRIPT LOAD in time")
        except (RedisError, OSError) as exc:
            self._failed(str(exc) or type(exc).__name__)
        else:
            self.connected = True

    def _connect(self) -> None:
        c = self.config
        common: dict[str, Any] = {
            "socket_connect_timeout": c.timeout,
            "retry": Retry(NoBackoff(), 0),  # a failure goes to on_error and the probe
            "max_connections": c.max_connections,
            "username": c.username or None,
            "password": c.password or None,
        }
        if c.tls is not None:
            common.update(
                ssl_ca_certs=c.tls.ca_file or None,
                ssl_certfile=c.tls.cert or None,
                ssl_keyfile=c.tls.key or None,
                ssl_cert_reqs="required" if c.tls.verify else "none",
                ssl_check_hostname=c.tls.verify,
            )
        if c.cluster:
            from redis.asyncio.cluster import ClusterNode, RedisCluster

            nodes = [ClusterNode(a.host, a.port) for a in c.addresses]
            ssl = {"ssl": True} if c.tls is not None else {}
            self.client = RedisCluster(startup_nodes=nodes, **ssl, **common)
        else:
            addr = c.addresses[0]
            if c.tls is not None:
                common["connection_class"] = aioredis.SSLConnection
            pool = aioredis.BlockingConnectionPool(
                host=addr.host, port=addr.port, db=c.db, timeout=None, **common
            )
            self.client = aioredis.Redis(connection_pool=pool)

    def decide(self, key: str, args: tuple[int, int], done: Callable[[Outcome], None]) -> bool:
        """Ask for one decision for `key` with the script's `args` (l7.redisgcra.script_args):
        True if asked (`done` is called later, on the loop, with the outcome), False if Redis
        is down or this limiter retired (nothing sent: the caller applies `on_error` now)."""
        if not self.health.up or self.closed:
            return False
        if self.client is None:
            self._connect()
        self.queue.append((key, args, done))
        if len(self.queue) == 1:
            asyncio.get_running_loop().call_soon(self._flush)
        return True

    def _flush(self) -> None:
        """Send what this turn of the loop asked for, as one task."""
        batch, self.queue = self.queue, []
        task = asyncio.get_running_loop().create_task(self._decide(batch))
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    async def _decide(self, batch: list) -> None:
        outcomes: list[Outcome]
        try:
            async with asyncio.timeout(self.config.timeout):
                replies = await self._send(batch)
        except TimeoutError:
            outcomes = ["timeout"] * len(batch)
            self._failed(f"no answer within {self.config.timeout * 1000:g} ms")
        except (RedisError, OSError) as exc:
            outcomes = ["error"] * len(batch)
            self._failed(str(exc) or type(exc).__name__)
        else:
            self.connected = True
            outcomes = [_outcome(reply) for reply in replies]
            if "error" in outcomes:
                bad = next(r for r in replies if _outcome(r) == "error")
                self._failed(f"unexpected reply: {bad!r}")
        # Each callback on its own turn: one that raises (a bug) is logged by the loop and
        # does not leave the other requests of the batch waiting.
        call_soon = asyncio.get_running_loop().call_soon
        for (_, _, done), outcome in zip(batch, outcomes, strict=True):
            call_soon(done, outcome)

    async def _send(self, batch: list) -> list:
        """The script's replies for `batch`, in order (an error reply as an exception)."""
        client, sha = self.client, self.sha
        if len(batch) == 1:
            key, args, _ = batch[0]
            try:
                return [await client.evalsha(sha, 1, key, *args)]
            except NoScriptError:  # a new or restarted Redis: load the script, once
                await client.script_load(SCRIPT)
                return [await client.evalsha(sha, 1, key, *args)]
        for _ in range(2):
            pipe = client.pipeline(transaction=False)
            for key, args, _ in batch:  # (a cluster pipeline refuses pipe.evalsha by name)
                pipe.execute_command("EVALSHA", sha, 1, key, *args)
            replies = await pipe.execute(raise_on_error=False)
            if not any(isinstance(r, NoScriptError) for r in replies):
                break
            await client.script_load(SCRIPT)
        return replies

    def _task_done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("global rate limit: a Redis task failed", exc_info=task.exception())

    def _failed(self, why: str) -> None:
        loop = asyncio.get_running_loop()
        if self.health.failed(loop.time()):
            more = self.health.suppressed
            self.health.suppressed = 0
            policy = "allowed" if self.config.on_error == "allow" else "refused (503)"
            log.warning(
                "redis %s: %s; global rate limits: requests %s until it answers%s",
                self.where,
                why,
                policy,
                f" ({more} more failures since the last line)" if more else "",
            )
        if not self.probing and not self.closed:
            self.probing = True
            probe = loop.create_task(self._probe())
            self.tasks.add(probe)
            probe.add_done_callback(self._task_done)

    async def _probe(self) -> None:
        """PING until Redis answers in time, then let decisions through again."""
        try:
            while not self.closed:
                await asyncio.sleep(self.health.next_probe())
                try:
                    async with asyncio.timeout(max(self.config.timeout, 0.25)):
                        await self.client.ping()
                except TimeoutError:
                    self._failed("still no answer to PING")
                    continue
                except (RedisError, OSError) as exc:
                    self._failed(str(exc) or type(exc).__name__)
                    continue
                self.connected = True
                if self.health.recovered():
                    log.warning("redis %s: answering again; global rate limits apply", self.where)
                return
        finally:
            self.probing = False

    def close(self) -> None:
        """Retire this limiter (a reload changed `[redis]`): decisions in flight finish,
        then the connections close; new ones get `on_error` from the caller."""
        self.closed = True
        if self.client is not None:
            pending = list(self.tasks)
            client = self.client

            async def close_later() -> None:
                await asyncio.gather(*pending, return_exceptions=True)
                await client.aclose()

            task = asyncio.get_running_loop().create_task(close_later())
            self.tasks.add(task)
            task.add_done_callback(self._task_done)

    def report(self) -> dict[str, Any]:
        return {"address": self.where, "up": self.health.up, "in_flight": len(self.tasks)}


def _outcome(reply: Any) -> Outcome:
    try:
        return decision(reply)
    except ValueError:  # an error reply (an exception object) or not this script's reply
        return "error"
