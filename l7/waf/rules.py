"""WAF rule files: TOML, one `[[rule]]` table per rule (docs/CONFIG.md, "WAF rule files").

```toml
[[rule]]
id = 942100                 # unique in the rule set; l4lb's own use 900000-999999
category = "sqli"           # a word, shown in logs: sqli, xss, traversal, cmdi, protocol...
severity = "critical"       # critical (5), error (4), warning (3), notice (2): the score
paranoia = 1                # 1-4: the rule runs from this paranoia level up
targets = ["query", "form", "cookies"]
pattern = '''\\bunion\\b\\s+select\\b'''
message = "SQL injection: UNION SELECT"
```

The ideas and categories are the OWASP Core Rule Set's (anomaly scoring, paranoia levels,
severities worth 5/4/3/2, the 9xxxxx id ranges by category); the patterns are l4lb's own and
written for Hyperscan, which has no back-references or look-around: a pattern it cannot
compile is a config error at the rule. Patterns are case-insensitive unless
`case_sensitive = true`; `^` and `$` match at the start and end of each inspected value.

The rule files shipped with l4lb are in `l7/waf/ruleset/`; a route's `rules = [FILES]` add
to them. Loading reports every problem through a `TableLoader` of the rule file, so the
error names that file, the key path (`rule[3].pattern`) and the line.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from l4lb.config.lines import LineMap
from l4lb.config.tables import REQUIRED, Fields, TableLoader
from l4lb.config.values import BadValue, boolean, choice, integer, string

__all__ = [
    "BUILTIN_DIR",
    "SEVERITIES",
    "TARGETS",
    "Rule",
    "builtin_rules",
    "load_rule_file",
]

#: CRS's anomaly scores per severity.
SEVERITIES = {"critical": 5, "error": 4, "warning": 3, "notice": 2}
#: What a rule can look at (see `l7.waf.extract`); "args" is "query" and "form" together.
TARGETS = ("method", "raw", "path", "query", "form", "body", "cookies", "headers")
_ALIASES = {"args": ("query", "form")}
BUILTIN_DIR = Path(__file__).parent / "ruleset"


@dataclass(frozen=True, slots=True)
class Rule:
    """One validated rule; `score` is its severity's worth, `source` the file it came from."""

    id: int
    category: str
    severity: str
    paranoia: int
    targets: tuple[str, ...]
    pattern: str
    message: str
    case_sensitive: bool = False
    source: str = ""

    @property
    def score(self) -> int:
        return SEVERITIES[self.severity]


def _category(value: Any) -> str:
    text = string(value)
    if not text or not all(c.isalnum() or c in "-_" for c in text):
        raise BadValue(f"{text!r} is not a category", "a word such as sqli, xss, traversal")
    return text


def _targets(value: Any) -> tuple[str, ...]:
    allowed = ", ".join((*TARGETS, "args"))
    items = value if isinstance(value, list) else [value]
    out: list[str] = []
    for item in items:
        if not isinstance(item, str) or item not in (*TARGETS, *_ALIASES):
            raise BadValue(f"unknown target {item!r}", allowed)
        out.extend(_ALIASES.get(item, (item,)))
    if not out:
        raise BadValue("a rule needs at least one target", allowed)
    return tuple(dict.fromkeys(out))


def _pattern(value: Any) -> str:
    text = string(value)
    if not text:
        raise BadValue("empty pattern", "a regular expression (Hyperscan syntax)")
    return text


_RULE: Fields = {
    "id": (integer(1, 9_999_999), REQUIRED),
    "category": (_category, REQUIRED),
    "severity": (choice(*SEVERITIES), "critical"),
    "paranoia": (integer(1, 4), 1),
    "targets": (_targets, REQUIRED),
    "pattern": (_pattern, REQUIRED),
    "message": (string, ""),
    "case_sensitive": (boolean, False),
}


def load_rule_file(path: Path) -> tuple[tuple[Rule, ...], list[Any]]:
    """The rules of one file and the `ConfigError`s found in it (file, key path, line).
    Patterns are checked by the matcher, which knows what Hyperscan accepts."""
    shown = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        loader = TableLoader(shown, LineMap(""))
        loader.error([], f"cannot read the rule file: {getattr(exc, 'strerror', None) or exc}")
        return (), loader.errors
    loader = TableLoader(shown, LineMap(text))
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        loader.error([], f"not valid TOML: {exc}", "[[rule]] tables")
        return (), loader.errors
    for key in data:
        if key != "rule":
            loader.unknown([], key, ["rule"])
    raw_rules = data.get("rule", [])
    if not isinstance(raw_rules, list):
        loader.error(["rule"], "expected [[rule]] tables", "[[rule]] tables")
        return (), loader.errors
    rules: list[Rule] = []
    seen: dict[int, int] = {}
    for i, raw in enumerate(raw_rules):
        table = loader.table(raw, ["rule", i], _RULE)
        if table is None:
            continue
        if table["id"] in seen:
            loader.error(
                ["rule", i, "id"],
                f"rule id {table['id']} is already used by rule[{seen[table['id']]}]",
                "an id unique in the rule set",
            )
            continue
        seen[table["id"]] = i
        rules.append(Rule(**table, source=shown))
    return tuple(rules), loader.errors


@lru_cache(maxsize=1)
def builtin_rules() -> tuple[Rule, ...]:
    """The rule files shipped in `l7/waf/ruleset/`, in file name order. A problem in them
    is a bug in l4lb, not in a user's config: raised as ValueError."""
    out: list[Rule] = []
    for path in sorted(BUILTIN_DIR.glob("*.toml")):
        rules, errors = load_rule_file(path)
        if errors:
            raise ValueError("; ".join(str(e) for e in errors))
        out.extend(rules)
    return tuple(out)
