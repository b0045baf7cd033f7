"""`l7.waf.needs.always_contains`: the screen leaves out a raw request-target with no `%`
when every `raw` rule needs one, so a wrong "yes" would let an attack pass unscreened."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from l7.waf.matcher import CompiledRules
from l7.waf.needs import always_contains
from l7.waf.rules import builtin_rules


def test_patterns_that_need_the_character():
    for pattern in (
        "%",
        "%u[0-9a-f]{4}|%c[01]%[89ab][0-9a-f]",  # the built-in rules' shapes
        "(?:%c0%ae|%u002e|%uff0e)",
        "%(?:[^0-9a-f]|[0-9a-f]?$)",
        "[%]x",
        "(%)+",
        "a%{2,}",
        "(?>a%)",
        "(?i)x(?:y|z)%",
    ):
        assert always_contains(pattern, "%"), pattern


def test_patterns_that_do_not():
    for pattern in (
        "a",
        "a|%b",  # one branch without it
        "%*x",
        "%?x",
        "a%{0,2}",
        "[%a]",
        "[^%]",
        "(?=%)a",  # a lookahead consumes nothing
        "[[:punct:]%]",  # POSIX class: Python and PCRE read it differently
        r"\x{25}",  # PCRE syntax Python rejects
        "(",  # not a pattern at all
    ):
        assert not always_contains(pattern, "%"), pattern


def test_the_builtin_raw_rules_need_a_percent_sign():
    """What makes the default rule set skip plain request-targets in its screen."""
    raw = [rule for rule in builtin_rules() if "raw" in rule.targets]
    assert raw and all(always_contains(rule.pattern, "%") for rule in raw)
    assert CompiledRules(tuple(builtin_rules())).raw_needs_percent


_PIECES = st.sampled_from(
    ["%", "a", "b", "[%a]", "[^a]", ".", "(?:", ")", "|", "*", "+", "?", "{2}"]
)


@settings(max_examples=400, deadline=None)
@given(pieces=st.lists(_PIECES, max_size=8), text=st.text(alphabet="%ab", max_size=8))
def test_never_a_wrong_yes(pieces, text):
    pattern = "".join(pieces)
    try:
        compiled = re.compile(pattern)
    except re.error:
        return
    if always_contains(pattern, "%") and compiled.search(text):
        assert "%" in compiled.search(text).group(), (pattern, text)
