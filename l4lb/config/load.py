"""Read a TOML config and validate it into `Config`, collecting every error before raising.

Each error names the file, the key path, the line and what is allowed, with a "did you mean"
for misspelled keys: an operator fixes all of them in one pass instead of one per run.
Unknown keys are errors, because a misspelled option that is silently ignored is the most
expensive kind of config bug.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from l4lb import balance
from l4lb.config.lines import LineMap, format_path
from l4lb.config.resolve import unresolved_servers
from l4lb.config.schema import (
    AccessConfig,
    AdminConfig,
    Config,
    DemoBackend,
    HealthConfig,
    HttpListenerSettings,
    HttpPoolSettings,
    ListenerConfig,
    PassiveConfig,
    PoolConfig,
    ServerConfig,
    Settings,
    SniRoute,
    TlsCert,
    UpstreamTlsConfig,
)
from l4lb.config.sources import Sources, gather
from l4lb.config.tables import REQUIRED as _REQUIRED
from l4lb.config.tables import Fields, Path_, TableLoader
from l4lb.config.tables import names as _names
from l4lb.config.tables import strings as _strings
from l4lb.config.values import (
    Address,
    BadValue,
    boolean,
    choice,
    duration,
    integer,
    parse_address,
    seconds_or_zero,
    status_ranges,
    string,
)
from l4lb.config.values import size as _size
from l4lb.errors import ConfigError, ConfigErrors

__all__ = ["LISTENER_PROTOCOLS", "load", "load_text"]

#: Listener protocols this build serves; the others in DESIGN.md's vocabulary come later.
LISTENER_PROTOCOLS = ("tcp", "tls-passthrough", "tls", "http", "https")
_TLS_PROTOCOLS = ("tls", "https")


def _seconds(value: Any) -> float:
    return duration(value)


def _bind_address(value: Any) -> Address:
    addr = parse_address(value, default_host="0.0.0.0")
    if addr.host == "localhost":
        return Address("127.0.0.1", addr.port)
    try:
        ipaddress.ip_address(addr.host)
    except ValueError:
        raise BadValue(
            f"{addr.host!r} is not an IP address", 'an IP literal such as "0.0.0.0" or "[::]"'
        ) from None
    return addr


def _bind_list(value: Any) -> tuple[Address, ...]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise BadValue("the list is empty", "an address or a list of addresses")
    return tuple(_bind_address(item) for item in items)


def _verify(value: Any) -> str:
    if value is True or value is False:
        return "name" if value else "none"
    if value == "chain":
        return "chain"
    raise BadValue(
        f"{value!r} is not a verification mode",
        'true (chain and name), "chain" (chain only), false (nothing)',
    )


def _verify_name(value: Any) -> str:
    """One DNS name (no wildcard) or IP address a server certificate must be valid for."""
    if isinstance(value, str) and value:
        try:
            return str(ipaddress.ip_address(value.strip("[]")))
        except ValueError:
            pass
        if not value.startswith("*"):
            return _names(value, wildcard=False)[0]
    raise BadValue(
        f"{value!r} is not one host name or IP address",
        'a host name such as "backend.internal", or an IP address',
    )


def _access_log(value: Any) -> bool | str:
    if isinstance(value, bool) or (isinstance(value, str) and value):
        return value
    raise BadValue(f"{value!r} is not a log setting", 'true, false, or a file such as "access.log"')


def _access_log_format(value: Any) -> str:
    from l4lb.accesslog import VARIABLES, compile_format

    try:
        compile_format(string(value))
    except ValueError as exc:
        raise BadValue(str(exc), " ".join("$" + v for v in VARIABLES)) from None
    return value


def _log_target(value: Any) -> str:
    from l4lb.logtarget import parse_target

    try:
        parse_target(string(value))
    except ValueError as exc:
        raise BadValue(
            str(exc), '"stderr", "syslog", "syslog:/dev/log", "syslog:HOST:PORT"'
        ) from None
    return value


def _log_facility(value: Any) -> str:
    from l4lb.logtarget import FACILITIES

    return choice(*FACILITIES)(value)


def _user(value: Any) -> str:
    from l4lb.privdrop import lookup_user

    try:
        lookup_user(string(value))
    except KeyError as exc:
        raise BadValue(str(exc.args[0]), "a user name or uid from /etc/passwd") from None
    return value


def _group(value: Any) -> str:
    from l4lb.privdrop import lookup_group

    try:
        lookup_group(string(value))
    except KeyError as exc:
        raise BadValue(str(exc.args[0]), "a group name or gid from /etc/group") from None
    return value


_VERIFY_TOML = {"name": "true", "chain": '"chain"', "none": "false"}
_SETTINGS: Fields = {
    "log_format": (choice("text", "json"), "text"),
    "access_log": (_access_log, True),
    "drain_timeout": (seconds_or_zero, 30.0),
    "workers": (integer(0, 256), 0),
    "access_log_format": (_access_log_format, ""),
    "log": (_log_target, "stderr"),
    "log_facility": (_log_facility, "daemon"),
    "user": (_user, ""),
    "group": (_group, ""),
}
_LISTENER: Fields = {
    "bind": (_bind_list, _REQUIRED),
    "pool": (string, None),
    "protocol": (choice(*LISTENER_PROTOCOLS), "tcp"),
    "max_connections": (integer(1, 1_000_000), 10_000),
    "idle_timeout": (_seconds, 300.0),
    "backlog": (integer(1, 65535), 1024),
    "routes": (lambda v: v, ()),
    "accept_proxy": (boolean, False),
    "preread_timeout": (_seconds, 5.0),
    "certs": (lambda v: v, ()),
    "tls_min_version": (choice("1.2", "1.3"), "1.2"),
    "alpn": (lambda v: _strings(v), ()),
    "client_ca": (string, ""),
    "client_cert": (choice("off", "optional", "required"), "off"),
    "http": (lambda v: v, None),
    "access": (lambda v: v, None),
    "compress": (lambda v: v, None),
    "waf": (lambda v: v, None),
}


def _cidrs(value: Any) -> tuple[str, ...]:
    out = []
    for item in _strings(value):
        try:
            out.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise BadValue(
                f"{item!r} is not an address range", '"10.0.0.0/8", "192.0.2.7", "::1/128"'
            ) from None
    return tuple(out)


# Never tunnelled (l7/upgrade.py): the HTTP/2 requests inside would bypass every route.
_NEVER_UPGRADES = frozenset({"h2c", "h2", "http/2", "http/2.0"})
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _upgrades(value: Any) -> tuple[str, ...]:
    allowed = 'a list of protocol names such as ["websocket"], or [] for none; never "h2c"'
    if not isinstance(value, list) or not all(isinstance(i, str) for i in value):
        raise BadValue(f"expected a list of protocol names, got {value!r}", allowed)
    out = []
    for item in value:
        if not _TOKEN.fullmatch(item):
            raise BadValue(f"{item!r} is not a protocol name", allowed)
        if item.lower() in _NEVER_UPGRADES:
            raise BadValue(
                f"{item!r} is never tunnelled: the requests inside would bypass every route",
                allowed,
            )
        out.append(item.lower())
    return tuple(out)


def _statuses(value: Any) -> tuple[int, ...]:
    return tuple(sorted({s for lo, hi in status_ranges(value) for s in range(lo, hi + 1)}))


_HTTP_LISTENER: Fields = {
    "max_header_bytes": (_size, 32768),
    "max_headers": (integer(1, 10000), 100),
    "max_uri": (_size, 8192),
    "max_body": (_size, 0),
    "max_requests": (integer(1, 10_000_000), 1000),
    "header_timeout": (_seconds, 10.0),
    "body_timeout": (_seconds, 60.0),
    "keepalive_timeout": (_seconds, 75.0),
    "trusted_proxies": (_cidrs, ()),
    "forwarded": (boolean, False),
    "traceparent": (choice("pass", "create"), "pass"),
    "redirect_https": (boolean, False),
    "hsts": (integer(0, 10 * 365 * 86400), 0),
    "parser": (choice("httptools", "h11"), "httptools"),
    "upgrades": (_upgrades, ("websocket",)),
    "x_forwarded_for": (choice("append", "replace"), "append"),
    "h2c": (boolean, False),
    "h2_max_streams": (integer(1, 10000), 100),
    "h2_header_table_size": (integer(0, 1 << 20), 4096),
    "h2_window": (integer(65535, (1 << 31) - 1), 262144),
    "h2_stream_buffer": (_size, 262144),
    "h2_max_resets": (integer(0, 1_000_000), 200),
    "h2_max_control": (integer(0, 1_000_000), 2000),
    "http3": (boolean, False),
    "alt_svc_max_age": (integer(0, 10 * 365 * 86400), 86400),
    "quic_retry": (choice("auto", "always", "off"), "auto"),
    "quic_retry_threshold": (integer(0, 1_000_000), 100),
    "quic_idle_timeout": (_seconds, 30.0),
    "quic_max_streams": (integer(1, 10000), 100),
    "quic_stream_window": (integer(16384, 1 << 30), 262144),
    "quic_connection_window": (integer(16384, 1 << 32), 1048576),
    "quic_max_datagram_size": (integer(1200, 65527), 1200),
    "quic_congestion": (choice("cubic", "reno"), "cubic"),
    "quic_early_data": (boolean, False),
    "quic_stateless_reset": (boolean, True),
    "qpack_table_size": (integer(0, 1 << 20), 0),
    "qpack_blocked_streams": (integer(0, 1000), 16),
}
_HTTP_POOL: Fields = {
    "response_timeout": (_seconds, 60.0),
    "retry_on": (_statuses, ()),
    "retry_budget": (lambda v: float(integer(0, 100)(v)), 20.0),
    "max_idle": (integer(0, 10000), 32),
    "max_idle_ceiling": (integer(0, 100000), 1024),
    "idle_timeout": (_seconds, 60.0),
    "breaker_failures": (integer(0, 1000), 5),
    "breaker_cool_off": (_seconds, 10.0),
    "breaker_half_open": (integer(1, 1000), 3),
}
_CERT: Fields = {
    "cert": (string, _REQUIRED),
    "key": (string, _REQUIRED),
    "ocsp": (string, ""),
    "selfsigned": (boolean, False),
    "names": (lambda v: _names(v, wildcard=True), ("localhost",)),
}
_UPSTREAM_TLS: Fields = {
    "verify": (_verify, "name"),
    "ca_file": (string, ""),
    "sni": (string, ""),
    "verify_name": (_verify_name, ""),
    "cert": (string, ""),
    "key": (string, ""),
    "alpn": (lambda v: _strings(v), ()),
}
_ROUTE: Fields = {
    "sni": (lambda v: _names(v, wildcard=True), _REQUIRED),
    "pool": (string, _REQUIRED),
    "alpn": (lambda v: _strings(v), ()),
}
_POOL: Fields = {
    "servers": (lambda v: v, _REQUIRED),
    "balance": (lambda v: v, "round_robin"),
    "connect_timeout": (_seconds, 5.0),
    "retries": (integer(0, 100), 2),
    "slow_start": (seconds_or_zero, 0.0),
    "health": (lambda v: v, None),
    "passive": (lambda v: v, None),
    "proxy_protocol": (choice("off", "v1", "v2"), "off"),
    "tls": (lambda v: v, None),
    "http": (lambda v: v, None),
}
_SERVER: Fields = {
    "address": (parse_address, _REQUIRED),
    "name": (string, None),
    "weight": (integer(1, 1000), 1),
    "backup": (boolean, False),
    "max_connections": (integer(0, 1_000_000), 0),
    "drain": (boolean, False),
    "verify_name": (_verify_name, ""),
}
_HEALTH: Fields = {
    "type": (choice("tcp", "http"), "tcp"),
    "interval": (_seconds, 2.0),
    "timeout": (_seconds, 1.0),
    "rise": (integer(1, 100), 2),
    "fall": (integer(1, 100), 3),
    "path": (string, "/"),
    "host": (string, ""),
    "expect_status": (status_ranges, ((200, 399),)),
}
_PASSIVE: Fields = {
    "max_fails": (integer(0, 1000), 1),
    "fail_timeout": (_seconds, 10.0),
}
_DEMO: Fields = {"backends": (lambda v: v, _REQUIRED)}
_ADMIN: Fields = {
    "bind": (lambda v: _bind_address(v), _REQUIRED),
    "token": (string, ""),
    "token_env": (string, ""),
}
_TOP = ("global", "admin", "demo", "listener", "pool", "cache", "jwt", "redis")


def load(path: str | Path, *, resolve: bool = True) -> Config:
    """Read and validate `path`. Raises `ConfigErrors` listing every problem found.

    With `resolve`, server host names are resolved too (`config/resolve.py`): this blocks on
    the system resolver, so an event loop calls it from a worker thread."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigErrors([ConfigError(name, "", 0, "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigErrors([ConfigError(name, "", 0, f"cannot read the file: {exc}")]) from None
    return load_text(text, name, resolve=resolve)


def load_text(text: str, file: str = "<config>", *, resolve: bool = True) -> Config:
    """Validate TOML `text` as if read from `file` (`resolve` as for `load`). Its
    `include`s are read from disk, relative to `file`; `${VAR}`s come from os.environ."""
    data, sources = gather(text, file, os.environ)
    loader = _Loader(file, sources.main.lines, sources)
    config = loader.config(data)
    found: dict = {}
    if resolve:
        for source in sources.files:
            mine = [a for a in loader.addresses if sources.source_of(a[0]) is source]
            loader.errors += unresolved_servers(mine, source.file, source.lines.line_of, found)
    if loader.errors or config is None:
        raise ConfigErrors(sorted(loader.errors, key=lambda e: (e.line == 0, e.file, e.line)))
    return replace(config, resolved=found) if found else config


class _Loader(TableLoader):
    def __init__(self, file: str, lines: LineMap, sources: Sources | None = None) -> None:
        super().__init__(file, lines, sources)
        self.addresses: list[tuple[Path_, Address]] = []  # servers' addresses, to resolve

    def config(self, data: dict[str, Any]) -> Config | None:
        for key in data:
            if key not in _TOP:
                self.unknown([], key, _TOP)
        settings_raw = self.table(data.get("global", {}), ["global"], _SETTINGS)
        if settings_raw and isinstance(settings_raw["access_log"], str):
            settings_raw["access_log"] = str(self.path(settings_raw["access_log"]))
        settings = Settings(**settings_raw) if settings_raw else Settings()
        pools = [
            p
            for name, body in self.named_tables(data.get("pool", {}), ["pool"]).items()
            if (p := self.pool(name, body)) is not None
        ]
        if "jwt" in data:  # [jwt.NAME] providers, before the routes that name them
            from l7.jwtconf import parse_providers

            self.jwt_providers = parse_providers(self, data["jwt"])
        listeners = [
            item
            for name, body in self.named_tables(data.get("listener", {}), ["listener"]).items()
            if (item := self.listener(name, body)) is not None
        ]
        demo = self.demo(data["demo"]) if "demo" in data else ()
        admin = self.admin(data["admin"]) if "admin" in data else AdminConfig()
        if "listener" not in data:
            self.error([], "no listeners: add a [listener.NAME] table", "see docs/CONFIG.md")
        self.cross_check(data, listeners, pools, demo)
        listeners = self.caches(data.get("cache"), listeners)
        listeners = self.redis(data.get("redis"), listeners)
        if admin.bind is not None and any(admin.bind in lc.bind for lc in listeners):
            self.error(
                ["admin", "bind"],
                f"{admin.bind} is also bound by a listener",
                "a port no listener uses",
            )
        return Config(self.file, settings, tuple(listeners), tuple(pools), tuple(demo), admin)

    def caches(self, value: Any, listeners: list[ListenerConfig]) -> list[ListenerConfig]:
        """`[cache.NAME]` tables (l7/stageconf.py), checked against the routes' `cache =
        "NAME"`; each http(s) listener gets the ones its routes name."""
        found = {}
        if value is not None:
            from l7.stageconf import parse_cache

            for name, body in self.named_tables(value, ["cache"]).items():
                if (c := parse_cache(self, name, body, ["cache", name])) is not None:
                    found[name] = c
        declared = list(value) if isinstance(value, dict) else []
        out = []
        for lc in listeners:
            names = [(i, r.cache) for i, r in enumerate(lc.routes) if getattr(r, "cache", "")]
            for i, name in names:
                if name not in declared:
                    close = difflib.get_close_matches(name, declared, n=1)
                    hint = f"; did you mean {close[0]!r}?" if close else ""
                    self.error(
                        ["listener", lc.name, "routes", i, "cache"],
                        f"no cache named {name!r}{hint}",
                        ", ".join(declared) or "declare one with [cache.NAME]",
                    )
            used = tuple(found[n] for n in dict.fromkeys(n for _, n in names) if n in found)
            out.append(replace(lc, caches=used) if used else lc)
        return out

    def redis(self, value: Any, listeners: list[ListenerConfig]) -> list[ListenerConfig]:
        """`[redis]` (l7/redisconf.py), given to each listener with a global rate limit; a
        global limit without it is an error at its `scope`."""
        config = None
        if value is not None:
            from l7.redisconf import parse_redis

            config = parse_redis(self, value, ["redis"])
        out = []
        for lc in listeners:
            uses = [
                (i, j)
                for i, r in enumerate(lc.routes)
                for j, limit in enumerate(getattr(getattr(r, "security", None), "rate_limits", ()))
                if limit.scope == "global"
            ]
            if uses and value is None:
                for i, j in uses:
                    self.error(
                        ["listener", lc.name, "routes", i, "rate_limits", j, "scope"],
                        'scope = "global" needs a [redis] table',
                        '[redis] with address = "HOST:PORT", or scope = "local"',
                    )
            out.append(replace(lc, redis=config) if uses and config is not None else lc)
        return out

    def admin(self, value: Any) -> AdminConfig:
        raw = self.table(value, ["admin"], _ADMIN)
        if raw is None:
            return AdminConfig()
        if raw["token"] and raw["token_env"]:
            self.error(["admin", "token_env"], "both token and token_env are set", "one of them")
            return AdminConfig()
        if raw["token_env"] and not os.environ.get(raw["token_env"]):
            self.error(
                ["admin", "token_env"],
                f"the environment variable {raw['token_env']} is not set or empty",
                "a variable holding the bearer token",
            )
            return AdminConfig()
        config = AdminConfig(**raw)
        if not config.bind.is_loopback and not (config.token or config.token_env):
            self.error(
                ["admin", "bind"],
                f"{config.bind} is reachable from other hosts but the admin API has no token",
                'a loopback address, or token = "..." / token_env = "VAR"',
            )
            return AdminConfig()
        return config

    def listener(self, name: str, body: Any) -> ListenerConfig | None:
        parts: Path_ = ["listener", name]
        raw = self.table(body, parts, _LISTENER)
        if raw is None:
            return None
        http = raw["protocol"] in ("http", "https")
        if http:
            from l7.routeconf import parse_routes

            routes = parse_routes(self, raw["routes"], [*parts, "routes"])
        else:
            routes = self.routes(raw["routes"], [*parts, "routes"])
        if routes is None:
            return None
        settings = HttpListenerSettings()
        if raw["http"] is not None:
            if not http:
                self.error(
                    [*parts, "http"],
                    f"a {raw['protocol']} listener has no http settings",
                    'protocol = "http" or "https"',
                )
                return None
            h = self.table(raw["http"], [*parts, "http"], _HTTP_LISTENER)
            if h is None:
                return None
            settings = HttpListenerSettings(**h)
            if settings.http3 and raw["protocol"] != "https":
                self.error(
                    [*parts, "http", "http3"],
                    "HTTP/3 needs TLS: QUIC carries the https listener's certificates",
                    'protocol = "https"',
                )
                return None
        raw["http"] = settings
        if raw["access"] is None:
            raw["access"] = AccessConfig()
        else:
            from l4lb.config.access import parse_access

            access = parse_access(self, raw["access"], [*parts, "access"], listener=True)
            if access is None:
                return None
            raw["access"] = access
        if raw["compress"] is not None:  # the compression stage (l7/compress.py)
            if not http:
                self.error(
                    [*parts, "compress"], "only http(s) listeners compress", 'protocol = "http"'
                )
                return None
            from l7.stageconf import parse_compress

            raw["compress"] = parse_compress(self, raw["compress"], [*parts, "compress"])
            if raw["compress"] is None:
                return None
        if raw["waf"] is not None:  # the WAF stage (l7/waf/)
            if not http:
                self.error(
                    [*parts, "waf"], "only http(s) listeners have a WAF", 'protocol = "http"'
                )
                return None
            from l7.waf.config import parse_waf

            raw["waf"] = parse_waf(self, raw["waf"], [*parts, "waf"])
            if raw["waf"] is None:
                return None
        if raw["protocol"] == "tcp":
            if routes:
                self.error(
                    [*parts, "routes"],
                    "a tcp listener has no routes",
                    'protocol = "tls-passthrough" routes by SNI; tcp uses pool',
                )
                return None
            if raw["pool"] is None:
                self.error([*parts, "pool"], "missing required key 'pool'")
                return None
        elif raw["pool"] is None and not routes:
            self.error(
                [*parts, "routes"],
                "no routes and no default pool",
                "[[" + format_path([*parts, "routes"]) + "]] tables, or pool = NAME",
            )
            return None
        raw["routes"] = routes
        certs = self.certs(raw["certs"], [*parts, "certs"], raw["protocol"])
        if certs is None:
            return None
        raw["certs"] = certs
        if raw["client_cert"] != "off" and not raw["client_ca"]:
            self.error(
                [*parts, "client_cert"],
                "client certificates need client_ca",
                "client_ca = a PEM file of the CAs that sign client certificates",
            )
            return None
        if raw["client_ca"]:
            if not self.readable([*parts, "client_ca"], raw["client_ca"]):
                return None
            raw["client_ca"] = str(self.path(raw["client_ca"]))
        return ListenerConfig(name=name, **raw)

    def certs(self, value: Any, parts: Path_, protocol: str) -> tuple[TlsCert, ...] | None:
        from l4lb.tls.certs import CertError, load_pair

        if protocol not in _TLS_PROTOCOLS:
            if value:
                self.error(
                    parts,
                    f"a {protocol} listener has no certificates",
                    'protocol = "tls" terminates TLS with certs',
                )
                return None
            return ()
        if not isinstance(value, list) or not value:
            self.error(
                parts,
                f"a {protocol} listener needs at least one certificate",
                "[[" + format_path(parts) + "]] tables with cert and key",
            )
            return None
        out = []
        for i, item in enumerate(value):
            raw = self.table(item, [*parts, i], _CERT)
            if raw is None:
                return None
            cert, key = self.path(raw["cert"]), self.path(raw["key"])
            raw.update(cert=str(cert), key=str(key))
            if raw["ocsp"]:
                raw["ocsp"] = str(self.path(raw["ocsp"]))
            if not (raw["selfsigned"] and not cert.exists() and not key.exists()):
                try:
                    load_pair(cert, key)
                except CertError as exc:
                    self.error([*parts, i, "cert"], str(exc), "a PEM certificate chain and its key")
                    return None
            out.append(TlsCert(**raw))
        return tuple(out)

    def routes(self, value: Any, parts: Path_) -> tuple[SniRoute, ...] | None:
        if not isinstance(value, list | tuple):
            self.error(parts, "expected a list of routes", "[[" + format_path(parts) + "]] tables")
            return None
        out = []
        for i, item in enumerate(value):
            raw = self.table(item, [*parts, i], _ROUTE)
            if raw is None:
                return None
            out.append(SniRoute(**raw))
        return tuple(out)

    def pool(self, name: str, body: Any) -> PoolConfig | None:
        parts: Path_ = ["pool", name]
        raw = self.table(body, parts, _POOL)
        if raw is None:
            if isinstance(body, dict):  # still report problems inside the nested tables
                self.nested(body, parts)
            return None
        ok = True
        if raw["balance"] not in balance.NAMES:
            name = raw["balance"]
            close = difflib.get_close_matches(str(name), balance.NAMES, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            self.error(
                [*parts, "balance"], f"unknown algorithm {name!r}{hint}", ", ".join(balance.NAMES)
            )
            ok = False
        servers = self.servers(raw["servers"], [*parts, "servers"])
        health = passive = None
        if raw["health"] is not None:
            h = self.table(raw["health"], [*parts, "health"], _HEALTH)
            if h and h["timeout"] > h["interval"]:
                self.error(
                    [*parts, "health", "timeout"],
                    "the check timeout is longer than the interval",
                    f"at most interval ({h['interval']:g}s)",
                )
                h = None
            health = HealthConfig(**h) if h else None
            ok = ok and health is not None
        if raw["passive"] is not None:
            p = self.table(raw["passive"], [*parts, "passive"], _PASSIVE)
            passive = PassiveConfig(**p) if p else None
            ok = ok and passive is not None
        tls = None
        if raw["tls"] is not None:
            t = self.table(raw["tls"], [*parts, "tls"], _UPSTREAM_TLS)
            if t is not None:
                for key in ("ca_file", "cert", "key"):
                    if t[key]:
                        t[key] = str(self.path(t[key]))
                        if not self.readable([*parts, "tls", key], t[key]):
                            t = None
                            break
            tls = UpstreamTlsConfig(**t) if t is not None else None
            ok = ok and tls is not None
            if tls is not None and tls.verify_name and tls.verify != "name":
                self.error(
                    [*parts, "tls", "verify_name"],
                    f"verify_name is set but verify = {_VERIFY_TOML[tls.verify]} checks no name",
                    "verify = true (the default) with verify_name, or no verify_name",
                )
                ok = False
        if servers is not None and (tls is not None or raw["tls"] is None):
            ok = self.server_names_checked(parts, raw["servers"], tls) and ok
        http = HttpPoolSettings()
        if raw["http"] is not None:
            h = self.table(raw["http"], [*parts, "http"], _HTTP_POOL)
            ok = ok and h is not None
            http = HttpPoolSettings(**h) if h else http
        if servers is None or not ok:
            return None
        raw.update(
            servers=servers, health=health, passive=passive or PassiveConfig(), tls=tls, http=http
        )
        return PoolConfig(name=name, **raw)

    def server_names_checked(self, parts: Path_, raw: list, tls: UpstreamTlsConfig | None) -> bool:
        """A server's verify_name needs the pool to speak TLS and check names."""
        ok = True
        for i, item in enumerate(raw):
            if not isinstance(item, dict) or "verify_name" not in item:
                continue
            if tls is None or tls.verify != "name":
                why = (
                    "the pool has no [" + format_path([*parts, "tls"]) + "] table"
                    if tls is None
                    else f"the pool's tls has verify = {_VERIFY_TOML[tls.verify]}"
                )
                self.error(
                    [*parts, "servers", i, "verify_name"],
                    f"verify_name is set but {why}",
                    "verify_name on servers of a pool whose tls has verify = true",
                )
                ok = False
        return ok

    def nested(self, body: dict[str, Any], parts: Path_) -> None:
        if isinstance(body.get("health"), dict):
            self.table(body["health"], [*parts, "health"], _HEALTH)
        if isinstance(body.get("passive"), dict):
            self.table(body["passive"], [*parts, "passive"], _PASSIVE)
        if "servers" in body:
            self.servers(body["servers"], [*parts, "servers"])

    def servers(self, value: Any, parts: Path_) -> tuple[ServerConfig, ...] | None:
        allowed = 'a list of "host:port" strings or [[' + format_path(parts) + "]] tables"
        if not isinstance(value, list):
            self.error(parts, "expected a list of servers", allowed)
            return None
        if not value:
            self.error(parts, "a pool needs at least one server", allowed)
            return None
        out: list[ServerConfig] = []
        names: set[str] = set()
        ok = True
        for i, item in enumerate(value):
            here = [*parts, i]
            if isinstance(item, str):
                item = {"address": item}
            elif not isinstance(item, dict):
                self.error(here, f"expected a server, got {item!r}", allowed)
                ok = False
                continue
            raw = self.table(item, here, _SERVER)
            if raw is None:
                ok = False
                continue
            self.addresses.append(([*here, "address"], raw["address"]))
            raw["name"] = raw["name"] or str(raw["address"])
            if raw["name"] in names:
                self.error(
                    [*here, "name"],
                    f"duplicate server name {raw['name']!r} in this pool",
                    "a name unique within the pool",
                )
                ok = False
            names.add(raw["name"])
            out.append(ServerConfig(**raw))
        return tuple(out) if ok else None

    def demo(self, value: Any) -> tuple[DemoBackend, ...]:
        raw = self.table(value, ["demo"], _DEMO)
        if raw is None:
            return ()
        items = raw["backends"]
        if not isinstance(items, list) or not items:
            self.error(
                ["demo", "backends"], "expected a list of addresses", 'loopback "host:port" strings'
            )
            return ()
        out = []
        for i, text in enumerate(items):
            try:
                addr = parse_address(text)
            except BadValue as exc:
                self.error(["demo", "backends", i], exc.message, exc.allowed)
                continue
            if not addr.is_loopback:
                self.error(
                    ["demo", "backends", i],
                    f"{text!r} is not a loopback address",
                    "127.0.0.0/8 or [::1]: demo backends only listen locally",
                )
                continue
            out.append(DemoBackend(f"demo-{i + 1}", addr))
        return tuple(out)

    def cross_check(
        self,
        data: dict[str, Any],
        listeners: list[ListenerConfig],
        pools: list[PoolConfig],
        demo: tuple[DemoBackend, ...],
    ) -> None:
        declared_pools = list(data.get("pool", {})) if isinstance(data.get("pool"), dict) else []
        bound: dict[Address, str] = {}
        for listener in listeners:
            parts: Path_ = ["listener", listener.name]
            refs: list[tuple[Path_, str]] = [([*parts, "pool"], listener.pool or "")]
            if listener.protocol in ("http", "https"):
                from l7.routes import referenced_pools

                refs += [
                    ([*parts, "routes", i, "pool"], p) for i, p in referenced_pools(listener.routes)
                ]
            else:
                refs += [
                    ([*parts, "routes", i, "pool"], r.pool) for i, r in enumerate(listener.routes)
                ]
            for where, pool in refs:
                if pool and pool not in declared_pools:
                    close = difflib.get_close_matches(pool, declared_pools, n=1)
                    hint = f"; did you mean {close[0]!r}?" if close else ""
                    self.error(
                        where,
                        f"no pool named {pool!r}{hint}",
                        ", ".join(declared_pools) or "declare one with [pool.NAME]",
                    )
            for addr in listener.bind:
                if addr in bound:
                    self.error(
                        [*parts, "bind"],
                        f"{addr} is already bound by listener {bound[addr]!r}",
                        "an address used by one listener only",
                    )
                bound[addr] = listener.name
        for backend in demo:
            if backend.address in bound:
                self.error(
                    ["demo", "backends"],
                    f"{backend.address} is also bound by listener {bound[backend.address]!r}",
                    "a port no listener uses",
                )
