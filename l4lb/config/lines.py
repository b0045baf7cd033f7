"""Find the line of a key path in TOML source, so that config errors can point at it.

`tomllib` returns plain dicts and forgets where things were. This scanner reads the same text
once more and records the line of every table header, every `key = value`, and every inline
table that starts a line inside a multi-line array (`servers = [ {..}, {..} ]`). It
understands what configs are written with (dotted and quoted keys, `[table]`,
`[[array.of.tables]]`, multi-line arrays and strings); when it cannot place a key exactly, the
lookup falls back to the nearest enclosing table, which is still the right neighbourhood.
"""

from __future__ import annotations

import re

__all__ = ["LineMap", "format_path"]

_BARE = re.compile(r"[A-Za-z0-9_-]+")
_KEY_LINE = re.compile(
    r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*="""
)


def format_path(parts: list[str | int] | tuple[str | int, ...]) -> str:
    """`["pool", "api", "servers", 2, "weight"]` -> `pool.api.servers[2].weight`."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = part if _BARE.fullmatch(part) else f'"{part}"'
            out += f".{text}" if out else text
    return out


def _split_key(text: str) -> list[str]:
    parts: list[str] = []
    for m in re.finditer(r"""\s*("[^"]*"|'[^']*'|[^.\s]+)\s*(?:\.|$)""", text):
        token = m.group(1)
        if token[:1] in "\"'":
            token = token[1:-1]
        parts.append(token)
    return parts


class LineMap:
    """Key path (as `format_path` writes it) -> 1-based line number."""

    def __init__(self, text: str) -> None:
        self._lines: dict[str, int] = {}
        self._scan(text)

    def line_of(self, parts: list[str | int] | tuple[str | int, ...]) -> int:
        """The line of the key path, or of its nearest recorded ancestor; 0 if none."""
        parts = list(parts)
        while parts:
            line = self._lines.get(format_path(parts))
            if line:
                return line
            parts.pop()
        return 0

    def _scan(self, text: str) -> None:
        array_counts: dict[str, int] = {}
        table: list[str | int] = []
        depth = 0  # bracket depth of a multi-line value
        in_string: str | None = None  # the delimiter of an open multi-line string
        array_key: list[str | int] | None = None
        element = 0
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw
            if in_string:
                if in_string in line:
                    in_string = None
                continue
            if depth:
                if array_key is not None and line.lstrip().startswith("{"):
                    self._lines.setdefault(format_path([*array_key, element]), number)
                    element += 1
                depth += _bracket_balance(line)
                if depth <= 0:
                    depth, array_key = 0, None
                continue
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            if stripped.startswith("[["):
                name = stripped[2 : stripped.find("]]")]
                names = _split_key(name)
                parts = [*self._resolve(names[:-1], array_counts), names[-1]]
                key = format_path(parts)
                index = array_counts.get(key, 0)
                array_counts[key] = index + 1
                table = [*parts, index]
                self._lines.setdefault(key, number)
                self._lines[format_path(table)] = number
                continue
            if stripped.startswith("["):
                name = stripped[1 : stripped.find("]")]
                table = self._resolve(_split_key(name), array_counts)
                for end in range(1, len(table) + 1):  # implicit parents start here too
                    self._lines.setdefault(format_path(table[:end]), number)
                continue
            m = _KEY_LINE.match(line)
            if not m:
                continue
            path = [*table, *_split_key(m.group(1))]
            self._lines.setdefault(format_path(path), number)
            value = line[m.end() :]
            for delim in ('"""', "'''"):
                if value.count(delim) == 1:
                    in_string = delim
            balance = _bracket_balance(value)
            if balance > 0:
                depth, array_key, element = balance, path, 0
                if value.strip().startswith("[") and "{" in value:
                    # The first element sits on the key's own line.
                    self._lines.setdefault(format_path([*path, 0]), number)
                    element = value.count("{")

    def _resolve(self, parts: list[str], array_counts: dict[str, int]) -> list[str | int]:
        """Map a header's dotted name to a path, indexing arrays of tables by their last item."""
        out: list[str | int] = []
        for part in parts:
            out.append(part)
            count = array_counts.get(format_path(out))
            if count:
                out.append(count - 1)
        return out


def _bracket_balance(text: str) -> int:
    """Net count of opening brackets outside strings and comments."""
    balance = 0
    quote = ""
    for ch in text:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            break
        elif ch in "[{":
            balance += 1
        elif ch in "]}":
            balance -= 1
    return balance
