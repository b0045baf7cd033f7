"""The table machinery of the config loader, shared by `l4lb.config.load` and the route
parser of the HTTP layer (`l7.routes`), so that neither imports the other: converting one
TOML table by a field list, collecting located errors, names and host names.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from l4lb.config.lines import LineMap, format_path
from l4lb.config.values import BadValue
from l4lb.errors import ConfigError

if TYPE_CHECKING:
    from l4lb.config.sources import Sources

__all__ = ["NAME", "REQUIRED", "Fields", "Path_", "TableLoader", "names", "strings"]

REQUIRED = object()  # a field list's default for a key that must be given
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
Path_ = list[str | int]
#: key -> (converter raising BadValue, default or REQUIRED)
Fields = dict[str, tuple[Callable[[Any], Any], Any]]

HOSTNAME = re.compile(
    r"^(\*\.)?([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)*"
    r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$"
)


def strings(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(i, str) and i for i in items):
        raise BadValue(
            f"expected a string or a list of strings, got {value!r}",
            "a string or a list of strings",
        )
    return tuple(items)


def names(value: Any, *, wildcard: bool) -> tuple[str, ...]:
    allowed = 'host names such as "api.example.com"' + (' or "*.example.com"' if wildcard else "")
    out = []
    for name in strings(value):
        name = name.lower().rstrip(".")
        if not HOSTNAME.match(name) or (name.startswith("*") and not wildcard):
            raise BadValue(f"{name!r} is not a host name", allowed)
        out.append(name)
    return tuple(out)


class TableLoader:
    """Converts tables and collects every error with its file, key path and line."""

    def __init__(self, file: str, lines: LineMap, sources: Sources | None = None) -> None:
        self.file = file
        self.lines = lines
        self.sources = sources  # with includes: which file each table came from
        self.errors: list[ConfigError] = []

    def error(self, parts: Path_, message: str, allowed: str = "") -> None:
        if self.sources is not None:
            file, line = self.sources.locate(parts)
        else:
            file, line = self.file, self.lines.line_of(parts)
        self.errors.append(ConfigError(file, format_path(parts), line, message, allowed))

    def unknown(self, parts: Path_, key: str, known: list[str] | tuple[str, ...]) -> None:
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        self.error([*parts, key], f"unknown key {key!r}{hint}", ", ".join(known))

    def table(self, value: Any, parts: Path_, fields: Fields) -> dict[str, Any] | None:
        """Convert the keys of one table; None if anything in it was wrong."""
        if not isinstance(value, dict):
            self.error(parts, f"expected a table, got {value!r}")
            return None
        before = len(self.errors)
        for key in value:
            if key not in fields:
                self.unknown(parts, key, list(fields))
        out: dict[str, Any] = {}
        for key, (convert, default) in fields.items():
            if key in value:
                try:
                    out[key] = convert(value[key])
                except BadValue as exc:
                    self.error([*parts, key], exc.message, exc.allowed)
            elif default is REQUIRED:
                self.error([*parts, key], f"missing required key {key!r}")
            else:
                out[key] = default
        return out if len(self.errors) == before else None

    def named_tables(self, value: Any, parts: Path_) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.error(parts, "expected tables such as [" + format_path(parts) + ".NAME]")
            return {}
        good = {}
        for name, body in value.items():
            if not NAME.match(name):
                self.error(
                    [*parts, name],
                    f"{name!r} is not a valid name",
                    "letters, digits, '_', '-', '.', up to 64 characters",
                )
            else:
                good[name] = body
        return good

    def path(self, value: str) -> Path:
        """Relative paths in a config are relative to the config file's folder. The result
        is absolute and normalised, so the same file is written the same way however the
        config was named (`l4lb plan` compares them), and does not move if the cwd does."""
        path = Path(value)
        return Path(os.path.abspath(path if path.is_absolute() else Path(self.file).parent / path))

    def readable(self, parts: Path_, value: str) -> bool:
        """True if the file at `value` can be read; else the error is reported."""
        try:
            self.path(value).read_bytes()
        except OSError as exc:
            self.error(parts, f"cannot read {value!r}: {exc.strerror or exc}", "a readable file")
            return False
        return True
