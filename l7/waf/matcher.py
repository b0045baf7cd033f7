"""The rule set compiled for matching: one Hyperscan database for all rules.

Hyperscan (Intel's multi-pattern regex engine, via the `hyperscan` package) scans a value
once for every pattern at the same time, so the cost of a request grows with the bytes
inspected, not with the number of rules. It was chosen over google-re2's `Set` and
pyahocorasick by measuring the rule set on the corpora (bench/waf_engines.py; the figures
are in docs/CONFIG.md): pyahocorasick matches literal strings only, so every hit would
still need a regex confirmation in Python.

One database holds every rule (compiling one per target took five times as long); a match
counts only when the rule names the target the value came from. Flags: case-insensitive
(unless the rule says otherwise), `.` matches newlines, and single-match (a rule reports
once per value; a request scores each rule once). Each value is scanned on its own, so `^`
and `$` are its start and end. A pattern Hyperscan cannot compile is reported with the
rule's file and id.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import hyperscan

from l7.waf.rules import Rule

__all__ = ["CompiledRules", "PatternError", "compile_rules"]

_BASE = hyperscan.HS_FLAG_DOTALL | hyperscan.HS_FLAG_SINGLEMATCH


class PatternError(ValueError):
    """A rule's pattern is not one Hyperscan compiles (`rule` says which, `reason` why)."""

    def __init__(self, rule: Rule, reason: str) -> None:
        super().__init__(f"rule {rule.id}: {reason}")
        self.rule = rule
        self.reason = reason


def _on_match(rule: int, start: int, end: int, flags: int, found: tuple) -> None:
    if found[1] in found[2][rule]:
        found[0].append(rule)


class CompiledRules:
    """`rules` compiled into one database. `scan` is the only call made per request; it is
    not thread-safe (one scratch space), which is what one event loop per process needs."""

    __slots__ = ("database", "rules", "targets", "where")

    def __init__(self, rules: tuple[Rule, ...]) -> None:
        self.rules = rules
        self.where = [frozenset(rule.targets) for rule in rules]
        self.targets = frozenset(t for rule in rules for t in rule.targets)
        self.database = _database(rules, list(range(len(rules)))) if rules else None

    def scan(self, values: dict[str, list[str]]) -> list[Rule]:
        """The rules that match any of `values` (target -> texts), each once."""
        db = self.database
        if db is None:
            return []
        hits: list[int] = []
        where = self.where
        for target, texts in values.items():
            found = (hits, target, where)
            for text in texts:
                if text:
                    db.scan(text.encode("utf-8", "surrogatepass"), _on_match, context=found)
        if not hits:
            return []
        rules = self.rules
        return [rules[i] for i in sorted(set(hits))]


def _database(rules: tuple[Rule, ...], chosen: list[int]) -> Any:
    expressions = [rules[i].pattern.encode("utf-8") for i in chosen]
    flags = [_BASE | (0 if rules[i].case_sensitive else hyperscan.HS_FLAG_CASELESS) for i in chosen]
    db = hyperscan.Database()
    try:
        db.compile(expressions=expressions, ids=chosen, elements=len(chosen), flags=flags)
    except hyperscan.error:
        for i, expression, flag in zip(chosen, expressions, flags, strict=True):
            try:  # which one: each alone (only on this error path)
                hyperscan.Database().compile(
                    expressions=[expression], ids=[i], elements=1, flags=[flag]
                )
            except hyperscan.error as exc:
                reason = str(exc) or "not a pattern Hyperscan accepts"
                raise PatternError(rules[i], reason) from None
        raise
    return db


@lru_cache(maxsize=64)
def compile_rules(rules: tuple[Rule, ...]) -> CompiledRules:
    """The compiled form of `rules`, shared by every route (and every reload) that has the
    same rule set: compiling takes milliseconds per rule, matching microseconds. Raises
    `PatternError` for a pattern Hyperscan rejects."""
    return CompiledRules(rules)
