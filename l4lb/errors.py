"""The errors l4lb raises on purpose.

Every error a user can cause derives from `L4lbError` and carries a message written for that
user; the CLI prints it and exits non-zero. Any other exception reaching the CLI is a bug and
keeps its traceback.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "ConfigError",
    "ConfigErrors",
    "ConnectTimeout",
    "L4lbError",
    "LocalProtocolError",
    "NoServerAvailable",
    "ProtocolError",
    "RemoteProtocolError",
    "UpstreamError",
    "one_line",
]


class L4lbError(Exception):
    """Base of every error with a message meant for the user."""


@dataclass(frozen=True)
class ConfigError:
    """One problem in one config file, located as precisely as we can.

    `path` is the key path as a user would write it (`pool.api.servers[2].weight`);
    `line` is 1-based, or 0 when the problem is not tied to a line (a missing table);
    `column` is 1-based when known (TOML syntax errors), written `file:line:column` as
    compilers do, so editors jump to it.
    """

    file: str
    path: str
    line: int
    message: str
    allowed: str = ""
    column: int = 0

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        if self.line and self.column:
            where += f":{self.column}"
        text = f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"
        if self.allowed:
            text += f" (allowed: {self.allowed})"
        return text


@dataclass
class ConfigErrors(L4lbError):
    """All problems found in a config; raised once, after validation has looked at everything."""

    errors: list[ConfigError] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


def one_line(exc: L4lbError) -> str:
    """The error for a log line: several config errors joined with "; " (a log entry that
    spans lines breaks grep, journald and log shippers)."""
    if isinstance(exc, ConfigErrors):
        return "; ".join(str(e) for e in exc.errors)
    return " ".join(str(exc).split("\n"))


class ProtocolError(L4lbError):
    """A peer broke a protocol's rules. `status_hint` is the HTTP status to answer with."""

    def __init__(self, message: str, status_hint: int = 400) -> None:
        super().__init__(message)
        self.status_hint = status_hint


class LocalProtocolError(ProtocolError):
    """We were about to break a protocol's rules: a bug or a misuse of our own API."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol forbids."""


class UpstreamError(L4lbError):
    """No upstream server could take the connection or request."""


class ConnectTimeout(UpstreamError):
    """Connecting to a server took longer than the pool's connect timeout."""


class NoServerAvailable(UpstreamError):
    """Every server in the pool is down, draining, full or already tried."""
