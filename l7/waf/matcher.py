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

The screen: a request's values (often fifteen or more: the query's names and values, the
cookies, a few headers) cost one Hyperscan call each, and the call's fixed cost is most of
it. So `screen` first scans them all at once, one value a line (`l7.waf.extract.
request_text`), with a second database of the same rules compiled with `HS_FLAG_MULTILINE`
(`^` and `$` also at each line's start and end). Whatever a rule matches in one value alone
it also matches there (the same bytes, the same line edges, a newline is a non-word
character for `\\b`), so a screen that finds nothing proves that the request matches no
rule, which is the answer for almost every request. It can also find more (a match across
two lines, or a rule's target not the one the line came from): then the values are scanned
one by one (`scan`), which is exact. Patterns that would break this (`\\A`, `\\z`, `\\Z`,
an inline `(?-m)`), or that match the newline between two plain lines, leave the rule set
without a screen (every request goes through `scan`).

`screen_request` screens a request in parts: the request line (`target_text`), the header
values (`header_text`) and the body, each its own text. Every value is still a whole line
of one of them, so the proof holds part by part; but for one the screen can prove no rule
matches without scanning it: the raw request-target when it has no `%` and every `raw`
rule needs one (`l7.waf.needs`; the built-in `raw` rules look for encodings). For a
plain target that line is as long as the path and query lines together, and Hyperscan's
cost grows with the bytes. A part found clean is remembered by its
raw inputs (method and request-target; the raw Cookie and free-text header values), so a
request that repeats a clean request line or a clean set of headers skips building that
text and scanning it: a verdict is a pure function of those inputs and of the rule set,
which is what the memo is keyed by and lives on. Only clean verdicts are kept, in two
bounded dicts (`MEMO_ENTRIES` each, emptied when full; inputs longer than `_MEMO_TARGET` or
`_MEMO_HEADERS` are not kept), so no input can make the memo answer "clean" for a request
the screen would flag, and a flood of distinct requests costs at most the memory bound and
the screen it would have cost anyway.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Final

import hyperscan

from l7.model import Request
from l7.waf.extract import body_text, header_parts, header_text, target_text
from l7.waf.needs import always_contains
from l7.waf.rules import Rule

__all__ = ["CompiledRules", "PatternError", "compile_rules"]

_BASE: Final = hyperscan.HS_FLAG_DOTALL | hyperscan.HS_FLAG_SINGLEMATCH
# What a line-at-a-time screen cannot stand for: whole-buffer anchors, multiline turned off.
_NOT_SCREENABLE: Final = re.compile(r"\\[AzZG]|\(\?[a-zA-Z]*-[a-zA-Z]*m")
# Plain values, one a line, that a screenable rule set must not match where it matches none
# of them alone (a rule such as `[\r\n]` matches every request's line breaks: the screen
# would never say "clean").
_PROBES: Final = (("a", "b"), ("a", "", "b"), ("1", "1"), ("a b", "c d"), ("-", "/"))
#: Clean request lines and clean header sets remembered per rule set (each).
MEMO_ENTRIES: Final = 1024
_MEMO_TARGET: Final = 1024  # characters of a request-target, at most, for it to be remembered
_MEMO_HEADERS: Final = 4096  # bytes of header values, at most


class PatternError(ValueError):
    """A rule's pattern is not one Hyperscan compiles (`rule` says which, `reason` why)."""

    def __init__(self, rule: Rule, reason: str) -> None:
        super().__init__(f"rule {rule.id}: {reason}")
        self.rule = rule
        self.reason = reason


def _on_match(rule: int, start: int, end: int, flags: int, found: tuple) -> None:
    if found[1] in found[2][rule]:
        found[0].append(rule)


def _on_probe(rule: int, start: int, end: int, flags: int, found: set) -> None:
    found.add(rule)


def _on_screen(rule: int, start: int, end: int, flags: int, found: list) -> bool:
    found.append(rule)
    return True  # one is enough: stop the scan


class CompiledRules:
    """`rules` compiled into one database. `scan` is the only call made per request; it is
    not thread-safe (one scratch space), which is what one event loop per process needs."""

    __slots__ = (
        "clean_heads",
        "clean_lines",
        "database",
        "found",
        "raw_needs_percent",
        "rules",
        "screener",
        "targets",
        "where",
    )

    def __init__(self, rules: tuple[Rule, ...]) -> None:
        self.rules = rules
        self.where = [frozenset(rule.targets) for rule in rules]
        self.targets = frozenset(t for rule in rules for t in rule.targets)
        # (the screen then leaves out a request-target with no `%`: `target_text`)
        self.raw_needs_percent = all(
            always_contains(rule.pattern, "%") for rule in rules if "raw" in rule.targets
        )
        self.database = _database(rules, list(range(len(rules)))) if rules else None
        self.screener = _screener(rules, self.database) if rules else None
        self.found: list[int] = []  # the screen's hits (reused: one request at a time)
        # `screen_request`'s memo: (method, target) and (header values, cookie values) keys
        self.clean_lines: dict[tuple[str, str], None] = {}
        self.clean_heads: dict[tuple[tuple[bytes, ...], tuple[bytes, ...]], None] = {}

    def screen_request(self, request: Request, body: bytes | None, kind: str) -> bool:
        """`screen` of `request` (and `body`, inspected as `kind`), part by part, with the
        memo of clean parts (module docstring)."""
        if self.screener is None:
            return self.database is not None
        wanted = self.targets
        target = request.target
        line = (request.method, target)
        lines = self.clean_lines
        if line not in lines:
            if self.screen(target_text(request, wanted, self.raw_needs_percent)):
                return True
            if len(target) <= _MEMO_TARGET:
                _remember(lines, line)
        free, cookies = header_parts(request, wanted)
        if free or cookies:
            heads = (tuple(free), tuple(cookies))
            known = self.clean_heads
            if heads not in known:
                if self.screen(header_text(free, cookies)):
                    return True
                size = 0
                for raw in free:
                    size += len(raw)
                for raw in cookies:
                    size += len(raw)
                if size <= _MEMO_HEADERS:
                    _remember(known, heads)
        return bool(body) and bool(kind) and self.screen(body_text(body, kind))

    def screen(self, text: str) -> bool:
        """False if no rule can match the request whose values, one a line, are `text`
        (`l7.waf.extract.request_text`); True if one may (then `scan` says which)."""
        db = self.screener
        if db is None:
            return self.database is not None
        found = self.found
        try:
            db.scan(text.encode("utf-8", "surrogatepass"), _on_screen, 0, found)
        except hyperscan.ScanTerminated:
            pass
        if not found:
            return False
        found.clear()
        return True

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


def _remember(memo: dict[Any, None], key: Any) -> None:
    if len(memo) >= MEMO_ENTRIES:
        # Start over (not oldest-out: deleting from a dict's front leaves holes that every
        # later `next(iter(memo))` walks through, thousands of instructions per request).
        memo.clear()
    memo[key] = None


def _screener(rules: tuple[Rule, ...], alone: Any) -> Any:
    """The screen's database (module docstring), or None when the rules cannot have one;
    `alone` is their value-by-value database."""
    if any(_NOT_SCREENABLE.search(rule.pattern) for rule in rules):
        return None
    db = _database(rules, list(range(len(rules))), hyperscan.HS_FLAG_MULTILINE)
    for lines in _PROBES:
        joined: set[int] = set()
        db.scan("\n".join(lines).encode(), _on_probe, 0, joined)
        each: set[int] = set()
        for line in lines:
            if line:
                alone.scan(line.encode(), _on_probe, 0, each)
        if joined - each:
            return None
    return db


def _database(rules: tuple[Rule, ...], chosen: list[int], extra: int = 0) -> Any:
    expressions = [rules[i].pattern.encode("utf-8") for i in chosen]
    base = _BASE | extra
    flags = [base | (0 if rules[i].case_sensitive else hyperscan.HS_FLAG_CASELESS) for i in chosen]
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
