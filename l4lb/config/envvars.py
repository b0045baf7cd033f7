"""`${VAR}` and `${VAR:-default}` in config string values, from the environment.

What HAProxy does with `"${VAR}"` in its config and Caddy with `{$VAR}`: a secret (an admin
token) or a per-host value (a bind address) comes from the environment instead of the file.
Expansion runs on the parsed TOML, value by value, never on the text: a value cannot inject
TOML syntax (a `"` or a newline in a variable stays inside its string), keys are never
expanded, and the line of every error is the line of the value. Only `${...}` is special, so
nginx-style `$remote_addr` in `access_log_format` is left alone; `$${` writes a literal `${`.

`${VAR}` with VAR unset is an error (as in HAProxy, a missing secret must not become an empty
token silently); `${VAR:-default}` uses `default` when VAR is unset or empty, as the shell
does. Sans-IO: the environment is passed in.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["expand_env"]

_REF = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
ALLOWED = "${NAME} with NAME set in the environment, ${NAME:-default}, or $${ for a literal ${"

Problem = tuple[list[str | int], str]


def expand_env(data: Any, environ: Mapping[str, str]) -> tuple[Any, list[Problem]]:
    """`data` (parsed TOML) with every `${...}` in its string values replaced, and the
    problems found as (key path, message). A value with a problem is left as written."""
    problems: list[Problem] = []
    return _walk(data, [], environ, problems), problems


def _walk(
    value: Any, parts: list[str | int], environ: Mapping[str, str], out: list[Problem]
) -> Any:
    if isinstance(value, str):
        return _expand(value, parts, environ, out) if "${" in value else value
    if isinstance(value, dict):
        return {k: _walk(v, [*parts, k], environ, out) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, [*parts, i], environ, out) for i, v in enumerate(value)]
    return value


def _expand(
    text: str, parts: list[str | int], environ: Mapping[str, str], out: list[Problem]
) -> str:
    before = len(out)

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$${":
            return "${"
        body = m.group(1)
        name, sep, default = body.partition(":-")
        if not _NAME.fullmatch(name):
            out.append((parts, f"{m.group(0)!r} is not a variable reference"))
            return m.group(0)
        value = environ.get(name)
        if sep:
            return value if value else default
        if value is None:
            out.append((parts, f"the environment variable {name} is not set"))
            return m.group(0)
        return value

    result = _REF.sub(one, text)
    if "${" in _REF.sub("", text):  # an opening "${" with no closing brace
        out.append((parts, f"unclosed '${{' in {text!r}"))
    return result if len(out) == before else text
