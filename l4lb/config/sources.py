"""The files a config is made of: the main file and its `include`s, parsed, expanded, merged.

`include = ["conf.d/*.toml"]` (a string or a list; each item a file, a glob or a directory,
relative to the file that says it) at the top level of a config adds the tables of other
files, as nginx's `include` and HAProxy's several `-f` files do. A directory means its
`*.toml` files; matches are read in name order, so `10-api.toml` comes before `20-web.toml`.
A glob that matches nothing is fine (an empty conf.d); a plain path that does not exist is
an error, as in nginx. Included files may include others; a file met twice is an error.

Merging is by table, never by key: `[listener.NAME]` and `[pool.NAME]` tables may live in any
file, `[global]`, `[admin]` and `[demo]` in one file each. A table defined in two files is an
error naming both files and lines: a silent override is the config bug an operator finds last.
Every error in the merged config is then located in the file that defined its table
(`locate`). Relative paths inside included files (certificates, CA files, the access log) are
relative to the main config's folder, as nginx resolves them against its prefix.
"""

from __future__ import annotations

import glob
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from l4lb.config.envvars import ALLOWED as ENV_ALLOWED
from l4lb.config.envvars import expand_env
from l4lb.config.lines import LineMap, format_path
from l4lb.errors import ConfigError, ConfigErrors

__all__ = ["Source", "Sources", "gather"]

#: Tables a file may add by name; any other top-level key is one table of one file.
NAMED = ("listener", "pool")
MAX_FILES = 1000
_INCLUDE_ALLOWED = 'a path, glob or directory, or a list of them: include = ["conf.d/*.toml"]'


@dataclass(frozen=True)
class Source:
    file: str
    lines: LineMap


class Sources:
    """Which file defined which table, so an error in the merged config points at the file."""

    def __init__(self, main: Source) -> None:
        self.main = main
        self.files: list[Source] = [main]
        self.owner: dict[tuple[str, ...], Source] = {}

    def source_of(self, parts: list[str | int] | tuple[str | int, ...]) -> Source:
        key = tuple(str(p) for p in parts[:2])
        return self.owner.get(key) or self.owner.get(key[:1]) or self.main

    def locate(self, parts: list[str | int] | tuple[str | int, ...]) -> tuple[str, int]:
        """(file, line) of a key path of the merged config."""
        source = self.source_of(parts)
        return source.file, source.lines.line_of(parts)


def parse(text: str, file: str) -> dict[str, Any]:
    """TOML `text` as read from `file`. Raises ConfigErrors (with line and column)."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        m = re.search(r"\(at line (\d+), column (\d+)\)", message)
        line, column = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", message)
        error = ConfigError(file, "", line, f"not valid TOML: {message}", column=column)
        raise ConfigErrors([error]) from None


def gather(
    text: str,
    file: str,
    environ: Mapping[str, str],
    read: Callable[[str], str] | None = None,
) -> tuple[dict[str, Any], Sources]:
    """The merged data of `file` (whose text is `text`) and everything it includes, with
    `${VAR}`s expanded. `read(path)` reads an included file (default: from disk, UTF-8).
    Raises ConfigErrors: TOML syntax, environment variables, includes, tables defined twice."""
    read = read or (lambda p: Path(p).read_text(encoding="utf-8"))
    main = Source(file, LineMap(text))
    sources = Sources(main)
    errors: list[ConfigError] = []
    merged: dict[str, Any] = {}
    seen = {os.path.abspath(file)}
    queue: list[tuple[Source, dict[str, Any]]] = [(main, parse(text, file))]
    while queue:
        source, data = queue.pop(0)
        data, problems = expand_env(data, environ)
        for parts, message in problems:
            errors.append(_error(source, parts, message, ENV_ALLOWED))
        for path in _includes(source, data.pop("include", None), errors):
            if os.path.abspath(path) in seen:
                errors.append(_error(source, ["include"], f"{path} is included twice"))
                continue
            if len(seen) >= MAX_FILES:
                errors.append(_error(source, ["include"], f"more than {MAX_FILES} files"))
                break
            seen.add(os.path.abspath(path))
            try:
                child_text = read(path)
            except (OSError, UnicodeDecodeError) as exc:
                reason = getattr(exc, "strerror", None) or exc
                errors.append(_error(source, ["include"], f"cannot read {path}: {reason}"))
                continue
            child = Source(path, LineMap(child_text))
            sources.files.append(child)
            try:
                queue.append((child, parse(child_text, path)))
            except ConfigErrors as exc:
                errors += exc.errors
        _merge(sources, source, data, merged, errors)
    if errors:
        raise ConfigErrors(errors)
    return merged, sources


def _error(source: Source, parts: list[str | int], message: str, allowed: str = "") -> ConfigError:
    return ConfigError(
        source.file, format_path(parts), source.lines.line_of(parts), message, allowed
    )


def _includes(source: Source, value: Any, errors: list[ConfigError]) -> list[str]:
    """The files one `include` names, in order."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(i, str) and i for i in items):
        errors.append(
            _error(source, ["include"], f"expected paths, got {value!r}", _INCLUDE_ALLOWED)
        )
        return []
    base = Path(source.file).parent
    out: list[str] = []
    for item in items:
        pattern = str(base / item) if not os.path.isabs(item) else item
        if os.path.isdir(pattern):
            out += sorted(glob.glob(os.path.join(glob.escape(pattern), "*.toml")))
        elif glob.has_magic(pattern):
            out += sorted(p for p in glob.glob(pattern) if not os.path.isdir(p))
        elif os.path.exists(pattern):
            out.append(pattern)
        else:
            errors.append(_error(source, ["include"], f"{item!r} does not exist", _INCLUDE_ALLOWED))
    return out


def _merge(
    sources: Sources,
    source: Source,
    data: dict[str, Any],
    merged: dict[str, Any],
    errors: list[ConfigError],
) -> None:
    for key, value in data.items():
        if key in NAMED and isinstance(value, dict) and isinstance(merged.get(key, {}), dict):
            into = merged.setdefault(key, {})
            for name, body in value.items():
                if name in into:
                    _twice(sources, source, [key, name], errors)
                    continue
                into[name] = body
                sources.owner[(key, name)] = source
        elif key in merged:
            _twice(sources, source, [key], errors)
        else:
            merged[key] = value
            sources.owner[(key,)] = source


def _twice(
    sources: Sources, source: Source, parts: list[str | int], errors: list[ConfigError]
) -> None:
    first = sources.source_of(parts)
    where = f"{first.file}:{first.lines.line_of(parts)}"
    errors.append(
        _error(
            source,
            parts,
            f"[{format_path(parts)}] is already defined in {where}",
            "each table in one file only: rename or remove one of them",
        )
    )
