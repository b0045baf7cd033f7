"""The validated config: frozen dataclasses built by `l4lb.config.load`.

Words follow DESIGN.md: a listener binds addresses and hands connections to a pool; a pool
holds servers and a balancing algorithm. Defaults are documented in docs/CONFIG.md and
chosen to match what HAProxy and nginx operators expect.
"""

from __future__ import annotations

from dataclasses import dataclass

from l4lb.config.values import Address

__all__ = [
    "AdminConfig",
    "Config",
    "DemoBackend",
    "HealthConfig",
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
    access_log: bool = True
    drain_timeout: float = 30.0  # seconds a shutdown waits for connections to finish
    workers: int = 1  # processes sharing each port with SO_REUSEPORT (0: one per CPU)


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
    """`[pool.NAME.tls]`: the pool speaks TLS to its servers."""

    verify: bool = True
    ca_file: str = ""  # empty: the system store
    sni: str = ""  # empty: the server's host
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
class ListenerConfig:
    name: str
    bind: tuple[Address, ...]
    pool: str | None  # the default route; required for "tcp"
    protocol: str = "tcp"
    max_connections: int = 10_000
    idle_timeout: float = 300.0
    backlog: int = 1024
    routes: tuple[SniRoute, ...] = ()
    accept_proxy: bool = False  # expect a PROXY v1/v2 header from a balancer in front
    preread_timeout: float = 5.0  # time for the PROXY header, ClientHello or TLS handshake
    certs: tuple[TlsCert, ...] = ()  # "tls": the first is the default certificate
    tls_min_version: str = "1.2"
    alpn: tuple[str, ...] = ()
    client_ca: str = ""
    client_cert: str = "off"  # "off" | "optional" | "required"


@dataclass(frozen=True, slots=True)
class Config:
    file: str
    settings: Settings
    listeners: tuple[ListenerConfig, ...]
    pools: tuple[PoolConfig, ...]
    demo: tuple[DemoBackend, ...] = ()
    admin: AdminConfig = AdminConfig()

    def pool(self, name: str) -> PoolConfig:
        for pool in self.pools:
            if pool.name == name:
                return pool
        raise KeyError(name)
