"""`[redis]`: the store that `scope = "global"` rate limits share between l4lb instances.

One table for the whole config (every listener's global limits use it), top level rather
than under `[global]`, because it is a connection with its own keys (address, timeout,
failure policy) like `[admin]`, not a process setting. Loaded by `l4lb.config.load` only
when the table is present (DESIGN.md: `l4lb` does not import `l7` at import time); errors go
through the loader with their key path, so they carry the file and line.

`timeout` bounds each decision (one round trip), default 50 ms: well under any request's
budget, and about a hundred times a round trip on a local network. `on_error` is what a
request gets while Redis does not answer in time: "allow" (fail open, Envoy's default for
its global rate limit service) or "deny" (fail closed: 503, see l7.guard).

`username`/`password` are Redis's AUTH (ACL user, or the `requirepass` password with no
user); write the password as `"${REDIS_PASSWORD}"` to keep it out of the file. A
`[redis.tls]` table turns TLS on (Redis 6's `tls-port`), with the same keys as a pool's
`[pool.NAME.tls]` where they apply: `ca_file`, `cert`/`key` for Redis's default
`tls-auth-clients yes`, and `verify`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from l4lb.config.tables import Fields, Path_, TableLoader
from l4lb.config.values import Address, BadValue, boolean, choice, duration, integer, string
from l4lb.config.values import parse_address as _address

__all__ = ["RedisConfig", "RedisTls", "parse_redis"]


@dataclass(frozen=True, slots=True)
class RedisTls:
    """TLS to Redis. `verify`: the server's certificate and its name (the address's host,
    as an IP or DNS name in the certificate) are checked; `ca_file` empty: the system
    store."""

    ca_file: str = ""
    cert: str = ""
    key: str = ""
    verify: bool = True


@dataclass(frozen=True, slots=True)
class RedisConfig:
    """Where Redis is and how far to trust it. `addresses`: one server, or with `cluster`
    the seed nodes of a Redis Cluster (the client learns the others from them)."""

    addresses: tuple[Address, ...]
    cluster: bool = False
    timeout: float = 0.05  # seconds per decision (connect included); then `on_error`
    key_prefix: str = "l4lb:"
    on_error: str = "allow"  # "allow" (fail open) | "deny" (fail closed: 503)
    max_connections: int = 64  # per worker process; a decision waits for a free one
    db: int = 0
    username: str = ""
    password: str = field(default="", repr=False)  # never in a log line or `l4lb plan`
    tls: RedisTls | None = None


def _addresses(value: Any) -> tuple[Address, ...]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise BadValue("the list is empty", '"127.0.0.1:6379", or a list of cluster nodes')
    return tuple(_address(item) for item in items)


def _prefix(value: Any) -> str:
    text = string(value)
    if "{" in text or "}" in text:
        raise BadValue(
            f"{text!r} has a brace", "a prefix without { } (l4lb puts the hash tag itself)"
        )
    return text


_REDIS: Fields = {
    "address": (_addresses, (Address("127.0.0.1", 6379),)),
    "cluster": (boolean, False),
    "timeout": (duration, 0.05),
    "key_prefix": (_prefix, "l4lb:"),
    "on_error": (choice("allow", "deny"), "allow"),
    "max_connections": (integer(1, 10_000), 64),
    "db": (integer(0, 1_000), 0),
    "username": (string, ""),
    "password": (string, ""),
    "tls": (lambda v: v, None),
}
_TLS: Fields = {
    "ca_file": (string, ""),
    "cert": (string, ""),
    "key": (string, ""),
    "verify": (boolean, True),
}


def _tls(loader: TableLoader, value: Any, parts: Path_) -> RedisTls | None:
    raw = loader.table(value, parts, _TLS)
    if raw is None:
        return None
    for key in ("ca_file", "cert", "key"):
        if raw[key]:
            raw[key] = str(loader.path(raw[key]))
            if not loader.readable([*parts, key], raw[key]):
                return None
    if bool(raw["cert"]) != bool(raw["key"]):
        have, need = ("cert", "key") if raw["cert"] else ("key", "cert")
        loader.error(
            [*parts, need], f"{have} is set without {need}", "both cert and key, or neither"
        )
        return None
    return RedisTls(**raw)


def parse_redis(loader: TableLoader, value: Any, parts: Path_) -> RedisConfig | None:
    """The `[redis]` table; None when it is wrong (reported through `loader`)."""
    raw = loader.table(value, parts, _REDIS)
    if raw is None:
        return None
    addresses = raw.pop("address")
    if len(addresses) > 1 and not raw["cluster"]:
        loader.error(
            [*parts, "address"],
            f"{len(addresses)} addresses without cluster = true",
            "one address, or the seed nodes of a Redis Cluster with cluster = true",
        )
        return None
    if raw["tls"] is not None:
        raw["tls"] = _tls(loader, raw["tls"], [*parts, "tls"])
        if raw["tls"] is None:
            return None
    if raw["password"] == "" and raw["username"]:
        loader.error(
            [*parts, "username"],
            f"{raw['username']!r} is set without a password",
            'password = "${REDIS_PASSWORD}" (or no username: the default user)',
        )
        return None
    if raw["cluster"] and raw["db"]:
        loader.error([*parts, "db"], "Redis Cluster has only database 0", "db = 0")
        return None
    return RedisConfig(addresses=addresses, **raw)
