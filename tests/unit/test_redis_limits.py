"""Global rate limits: `[redis]` and `scope` in the config (located errors), the script's
arguments and reply, the down/probe/log state (fake clock), and the Redis key."""

from __future__ import annotations

import pytest

from l4lb.config import load_text
from l4lb.config.values import Address
from l4lb.errors import ConfigErrors
from l7.redisgcra import RedisHealth, decision, script_args
from l7.redislimit import RedisLimiter, redis_key

BASE = """\
{redis}
[listener.web]
bind = "127.0.0.1:8080"
protocol = "http"
[[listener.web.routes]]
pool = "api"
rate_limits = [{{rate = 5, per = "10s"}}, {{name = "all", rate = 100, scope = "global"}}]
[listener.other]
bind = "127.0.0.1:8081"
protocol = "http"
pool = "api"
[pool.api]
[[pool.api.servers]]
address = "127.0.0.1:9001"
"""


def _load(redis: str):
    return load_text(BASE.format(redis=redis), "site.toml")


def _errors(redis: str) -> str:
    with pytest.raises(ConfigErrors) as info:
        _load(redis)
    return "\n".join(str(e) for e in info.value.errors)


def test_parsed_and_given_to_listeners_with_global_limits():
    config = _load('[redis]\naddress = "10.0.0.5:6380"\ntimeout = "20ms"\non_error = "deny"')
    web, other = config.listeners
    redis = web.redis
    assert redis.addresses == (Address("10.0.0.5", 6380),) and redis.timeout == 0.02
    assert redis.on_error == "deny" and redis.key_prefix == "l4lb:" and not redis.cluster
    assert other.redis is None  # no global limit there
    local, shared = web.routes[0].security.rate_limits
    assert (local.scope, shared.scope, shared.name) == ("local", "global", "all")


def test_defaults():
    redis = _load("[redis]").listeners[0].redis
    assert redis.addresses == (Address("127.0.0.1", 6379),)
    assert (redis.timeout, redis.on_error, redis.max_connections) == (0.05, "allow", 64)


def test_auth_and_tls():
    redis = (
        _load(
            '[redis]\nusername = "app"\npassword = "s3cret"\n[redis.tls]\nca_file = "/etc/hostname"'
        )
        .listeners[0]
        .redis
    )
    assert (redis.username, redis.password) == ("app", "s3cret")
    assert redis.tls.ca_file == "/etc/hostname" and redis.tls.verify and not redis.tls.cert
    assert "s3cret" not in repr(redis)  # config reprs reach logs and `l4lb plan`
    assert _load("[redis]").listeners[0].redis.tls is None


def test_cluster_seeds():
    redis = _load('[redis]\naddress = ["10.0.0.1:7000", "10.0.0.2:7000"]\ncluster = true')
    assert len(redis.listeners[0].redis.addresses) == 2


@pytest.mark.parametrize(
    ("redis", "expected"),
    [
        ("", 'site.toml:7: listener.web.routes[0].rate_limits[1].scope: scope = "global" needs'),
        ('[redis]\non_error = "maybe"', "site.toml:2: redis.on_error: 'maybe'"),
        ('[redis]\naddress = ["a:1", "b:2"]', "site.toml:2: redis.address: 2 addresses without"),
        ('[redis]\nkey_prefix = "x{"', "site.toml:2: redis.key_prefix: 'x{' has a brace"),
        ("[redis]\ncluster = true\ndb = 2", "site.toml:3: redis.db: Redis Cluster has only"),
        ('[redis]\ntimeout = "0s"', "site.toml:2: redis.timeout: '0s' must be greater"),
        ("[redis]\nadress = 1", "did you mean 'address'?"),
        ('[redis]\nusername = "app"', "site.toml:2: redis.username: 'app' is set without"),
        ('[redis]\n[redis.tls]\ncert = "/etc/hostname"', "redis.tls.key: cert is set without"),
        ('[redis]\n[redis.tls]\nca_file = "/nonexistent/ca.pem"', "redis.tls.ca_file: cannot"),
        ('[redis]\n[redis.tls]\nverify = "yes"', "site.toml:3: redis.tls.verify:"),
    ],
)
def test_config_errors(redis: str, expected: str):
    assert expected in _errors(redis)


def test_scope_is_checked():
    text = BASE.format(redis="[redis]").replace('scope = "global"', 'scope = "world"')
    with pytest.raises(ConfigErrors) as info:
        load_text(text, "site.toml")
    assert "rate_limits[1].scope" in str(info.value.errors[0])
    assert "local" in str(info.value.errors[0])


def test_script_args_read_the_limit_as_the_local_gcra():
    assert script_args(10, 1.0, 0) == (100_000, 10)  # burst defaults to the rate
    assert script_args(100, 60.0, 20) == (600_000, 20)
    assert script_args(3, 1.0, 1) == (333_333, 1)
    assert script_args(1_000_000_000, 1.0, 5) == (1, 5)  # never a zero interval


def test_decision_from_the_reply():
    got = decision([1, 3, 0, 250_000])
    assert got.allowed and got.remaining == 3 and got.retry_after == 0 and got.reset == 0.25
    got = decision([0, 0, 1_500_000, 4_000_000])
    assert not got.allowed and got.retry_after == 1.5
    for bad in (None, b"OK", [1, 2, 3], ["a", 1, 2, 3]):
        with pytest.raises(ValueError):
            decision(bad)


def test_health_down_probe_backoff_and_log_lines():
    health = RedisHealth(first=0.1, most=0.4, log_every=10.0)
    assert health.up
    assert health.failed(100.0) is True  # the first failure is logged
    assert not health.up
    assert [health.next_probe() for _ in range(4)] == [0.1, 0.2, 0.4, 0.4]
    assert health.failed(101.0) is False and health.failed(105.0) is False
    assert health.suppressed == 2
    assert health.failed(110.0) is True  # 10 s after the last line
    assert health.recovered() is True and health.up and health.suppressed == 0
    assert health.recovered() is False  # already up: nothing to log
    assert health.failed(111.0) is True  # down again: a new line at once
    assert health.next_probe() == 0.1  # and the backoff starts again


def test_redis_key_uses_the_value_as_hash_tag():
    assert redis_key("l4lb:web:api:all:", "192.0.2.7") == "l4lb:web:api:all:{192.0.2.7}"
    long = redis_key("p:", "k" * 500)
    assert long.startswith("p:{") and len(long) == len("p:{}") + 40
    assert redis_key("p:", "a}b") != redis_key("p:", "a}c")  # a brace would end the tag


def test_one_limiter_per_redis_config_kept_over_reloads():
    from l7.globallimit import limiter_for
    from l7.redisconf import RedisConfig

    limiters: dict = {("redis", "api", "local-limit"): object()}  # (a listener named redis)
    first = RedisConfig(addresses=(Address("127.0.0.1", 6379),))
    one = limiter_for(first, limiters)
    assert limiter_for(RedisConfig(addresses=(Address("127.0.0.1", 6379),)), limiters) is one
    other = limiter_for(RedisConfig(addresses=(Address("127.0.0.1", 6380),)), limiters)
    assert other is not one and one.closed and not other.closed  # a changed [redis] retires
    assert [v for v in limiters.values() if isinstance(v, RedisLimiter)] == [other]
    assert ("redis", "api", "local-limit") in limiters  # local limiters are left alone
