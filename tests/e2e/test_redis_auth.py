"""Global rate limits through a Redis that asks for a password (`requirepass`) or speaks
TLS with client certificates (Redis's `tls-port`, `tls-auth-clients yes`): the limit is
enforced when l4lb has the right credentials, and `on_error` answers when it has not."""

from __future__ import annotations

import pytest

from tests.e2e.helpers import free_port, make_ca_cert, pool_toml
from tests.e2e.redisserver import RedisServer, need_redis
from tests.e2e.test_redis_limits import _connected, _get, _limit, instances  # noqa: F401


def _config(port: int, admin: int, backend, redis_port: int, redis_extra: str) -> str:
    return (
        f'[admin]\nbind = "127.0.0.1:{admin}"\n'
        f'[redis]\naddress = "127.0.0.1:{redis_port}"\ntimeout = "200ms"\n'
        f'on_error = "deny"\nkey_prefix = "auth:"\n{redis_extra}\n'
        f'[listener.web]\nbind = "127.0.0.1:{port}"\nprotocol = "http"\n'
        '[[listener.web.routes]]\nname = "api"\npool = "p"\n'
        'rate_limits = [{name = "shared", rate = 1, per = "1m", burst = 2, scope = "global"}]\n'
        + pool_toml("p", [f'name = "a"\naddress = "{backend.address}"'])
    )


def _enforced(port: int) -> list[int]:
    return [_get(port)[0] for _ in range(3)]


def test_password(instances, http_backends, tmp_path):  # noqa: F811
    need_redis()
    redis = RedisServer(tmp_path, password="s3cret-pw")
    try:
        (a,) = http_backends("a")
        port, admin = free_port(), free_port()
        good = instances(_config(port, admin, a, redis.port, 'password = "s3cret-pw"'))
        _connected(admin)
        assert _enforced(port) == [200, 200, 429], good.log()
        assert b"auth:web:api:shared:{127.0.0.1}" in redis.command("KEYS", "auth:*")
        # A wrong password: Redis refuses, so the limit fails closed and says why; the
        # password itself is never logged.
        port2, admin2 = free_port(), free_port()
        bad = instances(_config(port2, admin2, a, redis.port, 'password = "wrong-pw"'))
        assert bad.wait_log(r"redis 127\.0\.0\.1:\d+: .*(?i:password|auth)"), bad.log()
        assert _get(port2)[0] == 503
        assert _limit(admin2)["redis_connected"] is False
        assert "wrong-pw" not in bad.log() and "s3cret-pw" not in good.log()
    finally:
        redis.stop()


@pytest.mark.parametrize("client_cert", [True, False], ids=["client-cert", "no-client-cert"])
def test_tls(instances, http_backends, tmp_path, client_cert):  # noqa: F811
    need_redis()
    ca, cert, key = make_ca_cert(tmp_path, "redis-ca", "redis", san="IP:127.0.0.1")
    _, ccert, ckey = make_ca_cert(tmp_path, "redis-ca", "l4lb")
    redis = RedisServer(tmp_path, tls=(ca, cert, key))
    try:
        (a,) = http_backends("a")
        port, admin = free_port(), free_port()
        tls = f'[redis.tls]\nca_file = "{ca}"\n'
        if client_cert:
            tls += f'cert = "{ccert}"\nkey = "{ckey}"\n'
        p = instances(_config(port, admin, a, redis.tls_port, tls))
        if client_cert:
            _connected(admin)
            assert _enforced(port) == [200, 200, 429], p.log()
            assert b"auth:web:api:shared:{127.0.0.1}" in redis.command("KEYS", "auth:*")
        else:  # Redis asks for a client certificate: the handshake fails, the limit fails closed
            assert p.wait_log(r"redis 127\.0\.0\.1:\d+: "), p.log()
            assert _get(port)[0] == 503
            assert _limit(admin)["redis_connected"] is False
    finally:
        redis.stop()
