"""The `waf` key of an http(s) listener (the default of its routes) and of a route.

```toml
waf = true                       # the defaults below
waf = false                      # a route turning its listener's WAF off
waf = {mode = "detect", paranoia = 2, threshold = 5, disable = [942260],
       rules = ["waf/local.toml"], body_limit = "64k"}
```

A route's table stands alone: keys it leaves out take the defaults, not the listener's
values (one place to read what a route does). `rules` files add to the rules shipped with
l4lb (`l7.waf.rules`); `disable` names rule ids of either, and an id that is in neither is
an error (a typo would otherwise silently disable nothing). The rule set is compiled at load
(`l7.waf.matcher`), so a pattern Hyperscan rejects fails `l4lb check` at its rule.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from l4lb.config.lines import LineMap
from l4lb.config.tables import Fields, TableLoader
from l4lb.config.values import BadValue, choice, integer, string
from l4lb.config.values import size as _size
from l7.waf.rules import Rule, builtin_rules, load_rule_file

__all__ = ["MAX_BODY_LIMIT", "WafConfig", "parse_waf"]

#: A held body never exceeds the Exchange's request body buffer (l7/exchange.py).
MAX_BODY_LIMIT = 256 * 1024
Path_ = list[str | int]


@dataclass(frozen=True, slots=True)
class WafConfig:
    """A validated `waf`. `active` is the rule set in force (the paranoia level applied,
    disabled ids removed); `enabled` False is `waf = false`."""

    enabled: bool = True
    mode: str = "block"  # "block": 403 at `threshold`; "detect": log only
    paranoia: int = 1
    threshold: int = 5  # CRS's inbound anomaly threshold: one critical rule
    disable: tuple[int, ...] = ()
    rules: tuple[str, ...] = ()  # extra rule files, absolute paths
    body_limit: int = 128 * 1024  # ModSecurity's SecRequestBodyNoFilesLimit default
    active: tuple[Rule, ...] = field(default=(), repr=False)


def _body_limit(value: Any) -> int:
    got = _size(value)
    if got > MAX_BODY_LIMIT:
        raise BadValue(f"{got} is over {MAX_BODY_LIMIT}", 'a size up to "256k"; 0: no bodies')
    return got


def _ids(value: Any) -> tuple[int, ...]:
    items = value if isinstance(value, list) else [value]
    convert = integer(1, 9_999_999)
    return tuple(convert(item) for item in items)


def _files(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    return tuple(string(item) for item in items)


_WAF: Fields = {
    "mode": (choice("block", "detect"), "block"),
    "paranoia": (integer(1, 4), 1),
    "threshold": (integer(1, 10_000), 5),
    "disable": (_ids, ()),
    "rules": (_files, ()),
    "body_limit": (_body_limit, 128 * 1024),
}


def parse_waf(loader: TableLoader, value: Any, parts: Path_) -> WafConfig | None:
    """`waf = true | false | {table}` at key path `parts`; None after a reported error."""
    if isinstance(value, bool):
        raw: dict[str, Any] | None = {k: default for k, (_, default) in _WAF.items()}
        if not value:
            return WafConfig(enabled=False)
    else:
        raw = loader.table(value, parts, _WAF)
    if raw is None:
        return None
    before = len(loader.errors)
    every = list(builtin_rules())
    known = {rule.id: rule for rule in every}
    files = []
    for name in raw["rules"]:
        path = loader.path(name)
        rules, errors = load_rule_file(path)
        if errors:
            loader.errors.extend(errors)
            continue
        for rule in rules:
            if rule.id in known:
                _rule_error(
                    loader,
                    path,
                    rule,
                    "id",
                    f"rule id {rule.id} is already used in {known[rule.id].source}",
                    "an id unique in the rule set",
                )
                continue
            known[rule.id] = rule
            every.append(rule)
        files.append(str(path))
    for i, rule_id in enumerate(raw["disable"]):
        if rule_id not in known and len(loader.errors) == before:  # (a bad file: ids unknown)
            loader.error(
                [*parts, "disable", i],
                f"unknown rule id {rule_id}",
                "ids of the rules shipped with l4lb (docs/CONFIG.md) or in `rules` files",
            )
    if len(loader.errors) != before:
        return None
    disabled = frozenset(raw["disable"])
    active = tuple(r for r in every if r.paranoia <= raw["paranoia"] and r.id not in disabled)
    try:
        from l7.waf.matcher import PatternError, compile_rules
    except ImportError as exc:  # (a platform without a hyperscan wheel)
        loader.error(parts, f"the WAF needs the hyperscan package: {exc}", "pip install hyperscan")
        return None
    user = tuple(every[len(builtin_rules()) :])
    try:
        if user:
            compile_rules(user)  # every pattern of the user's files, active here or not
        compile_rules(active)
    except PatternError as exc:
        _rule_error(
            loader,
            Path(exc.rule.source),
            exc.rule,
            "pattern",
            exc.reason,
            "a regular expression Hyperscan compiles (no back-references or look-around)",
        )
        return None
    return WafConfig(
        True,
        raw["mode"],
        raw["paranoia"],
        raw["threshold"],
        raw["disable"],
        tuple(files),
        raw["body_limit"],
        active,
    )


def _rule_error(
    loader: TableLoader, path: Path, rule: Rule, key: str, message: str, allowed: str
) -> None:
    """An error at `rule`'s key in its own file (found again by id: only on error paths)."""
    try:
        text = path.read_text(encoding="utf-8")
        index = next(
            i
            for i, raw in enumerate(tomllib.loads(text).get("rule", []))
            if isinstance(raw, dict) and raw.get("id") == rule.id
        )
    except (OSError, ValueError, StopIteration):
        text, index = "", 0
    where = TableLoader(str(path), LineMap(text))
    where.error(["rule", index, key], message, allowed)
    loader.errors.extend(where.errors)
