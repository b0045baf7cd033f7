"""Config: TOML in, frozen dataclasses out, every error located (see `load`)."""

from l4lb.config.load import LISTENER_PROTOCOLS, load, load_text
from l4lb.config.schema import (
    Config,
    DemoBackend,
    HealthConfig,
    ListenerConfig,
    PassiveConfig,
    PoolConfig,
    ServerConfig,
    Settings,
)
from l4lb.config.values import Address

__all__ = [
    "LISTENER_PROTOCOLS",
    "Address",
    "Config",
    "DemoBackend",
    "HealthConfig",
    "ListenerConfig",
    "PassiveConfig",
    "PoolConfig",
    "ServerConfig",
    "Settings",
    "load",
    "load_text",
]
