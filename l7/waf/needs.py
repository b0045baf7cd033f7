"""Whether every match of a rule's pattern contains a given character.

The screen (`l7.waf.matcher`) leaves a value out of its text when no rule that inspects
that value can match it: the raw request-target, when it has no `%` and every `raw` rule
needs one (the built-in ones look for encodings: `%u`, overlong UTF-8, bad escapes). That
is only safe if the answer here is never a wrong "yes", so it is worked out from the
pattern's parse, and anything this does not follow is a "no": a pattern Python's parser
rejects or may read differently from Hyperscan's PCRE syntax (POSIX classes such as
`[[:alpha:]]`, which Python reads as a set followed by `]`), lookarounds, conditionals.
"""

from __future__ import annotations

from typing import Any

try:  # (private modules: a Python without them gets "no" for every pattern)
    from re import _constants as sre
    from re import _parser as sre_parse

    _REPEATS: tuple[Any, ...] = (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT)
except (ImportError, AttributeError):  # pragma: no cover
    sre_parse = None  # type: ignore[assignment]

__all__ = ["always_contains"]


def always_contains(pattern: str, char: str) -> bool:
    """True only if every string `pattern` matches (anywhere in a value) contains `char`."""
    if sre_parse is None or "[:" in pattern or "[=" in pattern or "[." in pattern:
        return False  # (POSIX classes: PCRE and Python part the pattern differently)
    try:
        return _sequence(list(sre_parse.parse(pattern)), ord(char))
    except Exception:  # (any error: re.error, or a recursion limit on a deep pattern)
        return False


def _sequence(items: list[tuple[Any, Any]], code: int) -> bool:
    return any(_item(op, av, code) for op, av in items)


def _item(op: Any, av: Any, code: int) -> bool:
    if op is sre.LITERAL:
        return av == code
    if op is sre.IN:  # a set of one character (the parser makes `[%]` a LITERAL itself)
        return all(kind is sre.LITERAL and value == code for kind, value in av)
    if op is sre.SUBPATTERN:
        return _sequence(list(av[-1]), code)
    if op is sre.ATOMIC_GROUP:
        return _sequence(list(av), code)
    if op is sre.BRANCH:
        return all(_sequence(list(branch), code) for branch in av[1])
    if op in _REPEATS:
        low, _, body = av
        return low >= 1 and _sequence(list(body), code)
    return False
