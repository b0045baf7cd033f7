"""The validated config: frozen dataclasses built by `l4lb.config.load`.

Words follow DESIGN.md: a listener binds addresses and hands connections to a pool; a pool
holds servers and a balancing algorithm. Defaults are documented in docs/CONFIG.md and
chosen to match what HAProxy and nginx operators expect.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from l4lb.config.values import Address

__all__ = [
    "AccessConfig",
    "AdminConfig",
    "Config",
    "DemoBackend",
    "HealthConfig",
    "HttpListenerSettings",
    "HttpPoolSettings",
    "ListenerConfig",
    "PassiveConfig",
    "PoolConfig",
    "ServerConfig",
    "Settings",
    "SniRoute",
    "TlsCert",
    "UpstreamTlsConfig",
]


@dataclass(frozen=True, slots=True)
class Settings:
    log_format: str = "text"  # "text" | "json"
    access_log: bool | str = True  # a str: the file to append to (absolute; SIGUSR1 reopens)
    drain_timeout: float = 30.0  # seconds a shutdown waits for connections to finish
    workers: int = 0  # processes sharing each port with SO_REUSEPORT (0: one per CPU)
    access_log_format: str = ""  # nginx-like "$remote_addr $status ..." for HTTP text lines
    log: str = "stderr"  # "stderr", "syslog" (/dev/log), "syslog:/path", "syslog:HOST:PORT"
    log_facility: str = "daemon"
    user: str = ""  # drop to this user (and its groups) once listeners are bound
    group: str = ""  # and this group (default: the user's)


@dataclass(frozen=True, slots=True)
class AdminConfig:
    """The admin API (`/status`, `/metrics`, drain/enable, reload, `/config`)."""

    bind: Address | None = None  # None: no admin API
    token: str = ""  # bearer token; required when bind is not loopback
    token_env: str = ""  # or: the environment variable holding it


@dataclass(frozen=True, slots=True)
class DemoBackend:
    name: str
    address: Address


@dataclass(frozen=True, slots=True)
class HealthConfig:
    """Active checks. `type = "http"` sends `GET path` and expects a status in `expect_status`."""

    type: str = "tcp"  # "tcp" | "http"
    interval: float = 2.0
    timeout: float = 1.0
    rise: int = 2
    fall: int = 3
    path: str = "/"
    host: str = ""
    expect_status: tuple[tuple[int, int], ...] = ((200, 399),)


@dataclass(frozen=True, slots=True)
class PassiveConfig:
    """nginx's max_fails / fail_timeout: this many connect failures in a row take a server out
    for `fail_timeout` seconds. `max_fails = 0` turns passive detection off."""

    max_fails: int = 1
    fail_timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class ServerConfig:
    name: str
    address: Address
    weight: int = 1
    backup: bool = False
    max_connections: int = 0  # 0: no limit
    drain: bool = False
    verify_name: str = ""  # TLS pools: the name this server's certificate must carry


@dataclass(frozen=True, slots=True)
class HttpListenerSettings:
    """`[listener.NAME.http]`: limits and timeouts of an `http`/`https` listener. Defaults
    follow nginx where it has one (keepalive_timeout 75s, keepalive_requests 1000)."""

    max_header_bytes: int = 32768  # request line and headers together (431 beyond)
    max_headers: int = 100  # 431 beyond
    max_uri: int = 8192  # 414 beyond
    max_body: int = 0  # bytes; 0: no limit (bodies stream, they are never held whole); 413
    max_requests: int = 1000  # per keep-alive connection
    header_timeout: float = 10.0  # to receive a whole request head (slowloris guard): 408
    body_timeout: float = 60.0  # between two reads of a request body: 408
    keepalive_timeout: float = 75.0  # an idle keep-alive connection is closed after this
    trusted_proxies: tuple[str, ...] = ()  # CIDRs whose X-Forwarded-For / Forwarded is kept
    forwarded: bool = False  # also send the RFC 7239 Forwarded header
    traceparent: str = "pass"  # "pass" | "create": W3C traceparent when absent
    redirect_https: bool = False  # answer every request with 301 to https://host/target
    hsts: int = 0  # max-age for Strict-Transport-Security on responses (https); 0: off
    parser: str = "httptools"  # "httptools" (llhttp, fast) | "h11" (pure Python)
    upgrades: tuple[str, ...] = ("websocket",)  # protocols an Upgrade may switch to (lower-case)
    x_forwarded_for: str = "append"  # "append" (to a client's own) | "replace"
    # HTTP/2 (https listeners offer it by ALPN; http listeners only with h2c = true)
    h2c: bool = False  # http listeners: accept HTTP/2 with prior knowledge (never Upgrade)
    h2_max_streams: int = 100  # SETTINGS_MAX_CONCURRENT_STREAMS (nginx, Envoy: 100)
    h2_header_table_size: int = 4096  # SETTINGS_HEADER_TABLE_SIZE: HPACK decoder table
    h2_window: int = 262144  # SETTINGS_INITIAL_WINDOW_SIZE: request body per stream, bytes
    h2_stream_buffer: int = 262144  # response bytes held per stream before the server waits
    h2_max_resets: int = 200  # client stream resets per 10 s before GOAWAY; 0: no limit
    h2_max_control: int = 2000  # SETTINGS/PING/PRIORITY/empty DATA per 10 s; 0: no limit
    # HTTP/3 (https listeners only): QUIC on UDP, same address and port (quic/, docs/CONFIG.md)
    http3: bool = False
    alt_svc_max_age: int = 86400  # Alt-Svc h3 advertised on HTTP/1.1 and HTTP/2; 0: none
    quic_retry: str = "auto"  # "auto" (beyond quic_retry_threshold) | "always" | "off"
    quic_retry_threshold: int = 100  # handshakes in progress before Retry (HAProxy's default)
    quic_idle_timeout: float = 30.0  # a QUIC connection with no packets is closed after this
    quic_max_streams: int = 100  # concurrent request streams per connection
    quic_stream_window: int = 262144  # request body bytes in flight per stream
    quic_connection_window: int = 1048576  # request body bytes in flight per connection
    quic_max_datagram_size: int = 1200  # 1200 always gets through; bigger is faster
    quic_congestion: str = "cubic"  # "cubic" | "reno" (what aioquic offers)
    quic_early_data: bool = False  # 0-RTT (session tickets, safe methods only, RFC 8470)
    quic_stateless_reset: bool = True  # answer datagrams of unknown connections (RFC 9000 §10.3)
    qpack_table_size: int = 0  # SETTINGS_QPACK_MAX_TABLE_CAPACITY (decoder); 0: as HAProxy
    qpack_blocked_streams: int = 16  # SETTINGS_QPACK_BLOCKED_STREAMS


@dataclass(frozen=True, slots=True)
class HttpPoolSettings:
    """`[pool.NAME.http]`: how an HTTP pool talks to its servers."""

    response_timeout: float = 60.0  # from request sent to response head: 504
    retry_on: tuple[int, ...] = ()  # statuses retried for idempotent requests, e.g. 502-504
    retry_budget: float = 20.0  # retries allowed, as a percentage of requests in flight
    max_idle: int = 32  # idle keep-alive connections kept per server, at least
    max_idle_ceiling: int = 1024  # kept while that many requests are in flight to the server
    idle_timeout: float = 60.0  # an idle upstream connection is closed after this
    breaker_failures: int = 5  # consecutive 5xx or timeouts that open a server's breaker; 0 off
    breaker_cool_off: float = 10.0
    breaker_half_open: int = 3  # trial requests let through a half-open breaker


@dataclass(frozen=True, slots=True)
class PoolConfig:
    name: str
    servers: tuple[ServerConfig, ...]
    balance: str = "round_robin"
    connect_timeout: float = 5.0
    retries: int = 2  # further servers tried when a connect fails
    slow_start: float = 0.0  # seconds over which a returning server's weight ramps up
    health: HealthConfig | None = None
    passive: PassiveConfig = PassiveConfig()
    proxy_protocol: str = "off"  # "off" | "v1" | "v2": send a PROXY header to each server
    tls: UpstreamTlsConfig | None = None
    http: HttpPoolSettings = HttpPoolSettings()


@dataclass(frozen=True, slots=True)
class TlsCert:
    """A certificate chain and key for a `tls` listener. With `selfsigned`, missing files are
    generated at start for `names` (the demo's way to work on a bare machine)."""

    cert: str
    key: str
    ocsp: str = ""
    selfsigned: bool = False
    names: tuple[str, ...] = ("localhost",)


@dataclass(frozen=True, slots=True)
class UpstreamTlsConfig:
    """`[pool.NAME.tls]`: the pool speaks TLS to its servers. `verify`: "name" (TOML `true`)
    checks the chain and a name, "chain" the chain only, "none" (`false`) nothing."""

    verify: str = "name"
    ca_file: str = ""  # empty: the system store
    sni: str = ""  # empty: the verified name (verify_name, else the server's host)
    verify_name: str = ""  # empty: sni, else the server's host
    cert: str = ""
    key: str = ""
    alpn: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SniRoute:
    """A `tls-passthrough` route: the ClientHello's SNI matches one of `sni` (exact names or
    `*.suffix` wildcards, which match any depth below the suffix, as nginx's `map`), and, when
    `alpn` is set, one of the client's ALPN protocols is in it."""

    sni: tuple[str, ...]
    pool: str
    alpn: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AccessConfig:
    """`[listener.NAME.access]` or a route's `access`: who may connect (`allow`/`deny`
    ranges, the `*_file` ones already read in) and, on a listener, how much one client
    address may use (HAProxy's stick-table `conn_cur` and `conn_rate`), per worker process."""

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    max_per_client: int = 0  # concurrent connections from one address; 0: no limit
    rate_per_client: int = 0  # new connections per second from one address; 0: no limit
    rate_burst: int = 0  # connections at once beyond the rate; 0: the rate

    def __bool__(self) -> bool:
        return bool(self.allow or self.deny or self.max_per_client or self.rate_per_client)


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    name: str
    bind: tuple[Address, ...]
    pool: str | None  # the default route; required for "tcp"
    protocol: str = "tcp"
    max_connections: int = 10_000
    idle_timeout: float = 300.0
    backlog: int = 1024
    routes: tuple = ()  # SniRoute for tls-passthrough/tls, l7.routes.HttpRoute for http(s)
    accept_proxy: bool = False  # expect a PROXY v1/v2 header from a balancer in front
    preread_timeout: float = 5.0  # time for the PROXY header, ClientHello or TLS handshake
    certs: tuple[TlsCert, ...] = ()  # "tls": the first is the default certificate
    tls_min_version: str = "1.2"
    alpn: tuple[str, ...] = ()
    client_ca: str = ""
    client_cert: str = "off"  # "off" | "optional" | "required"
    http: HttpListenerSettings = HttpListenerSettings()
    access: AccessConfig = AccessConfig()
    # http(s): l7.compress.CompressConfig or None (off); the l7.stageconf.CacheConfig
    # tables its routes name, by name
    compress: Any = None
    caches: tuple = ()
    redis: Any = None  # l7.redisconf.RedisConfig when a route has a scope = "global" limit
    waf: Any = None  # http(s): l7.waf.config.WafConfig, the routes' default; None: off


@dataclass(frozen=True, slots=True)
class Config:
    file: str
    settings: Settings
    listeners: tuple[ListenerConfig, ...]
    pools: tuple[PoolConfig, ...]
    demo: tuple[DemoBackend, ...] = ()
    admin: AdminConfig = AdminConfig()
    # What loading found for the servers' addresses (l4lb.config.resolve.Resolved), so the
    # pools connect to what was checked without asking DNS again; empty without resolve.
    resolved: dict = field(default_factory=dict, compare=False, repr=False)

    def pool(self, name: str) -> PoolConfig:
        for pool in self.pools:
            if pool.name == name:
                return pool
        raise KeyError(name)
