"""The WAF's screen (l7.waf.matcher, `CompiledRules.screen`): one scan of every value of a
request, one a line, must never miss what the value-by-value scan finds, or a request with
an attack would pass uninspected. Checked on the corpora and on generated requests."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from l7.model import Request
from l7.waf.config import WafConfig
from l7.waf.extract import request_text, request_values
from l7.waf.matcher import CompiledRules, compile_rules
from l7.waf.rules import Rule, builtin_rules
from l7.waf.stage import RouteWaf
from tests.waf_corpus.corpus import attacks, benign

_P1 = tuple(r for r in builtin_rules() if r.paranoia <= 1)
_ALL = tuple(builtin_rules())


def _rule(pattern: str, targets: tuple[str, ...] = ("query",), id: int = 900001) -> Rule:
    return Rule(id, "test", "critical", 1, targets, pattern, "test rule")


# Anchored and short rules that generated text does match, on every target.
_EVERYWHERE = ("method", "raw", "path", "query", "cookies", "headers")
_GENERATED = (
    *_P1,
    _rule("^a[ab]", _EVERYWHERE, 900101),
    _rule("b$", _EVERYWHERE, 900102),
    _rule("^'", ("query", "cookies"), 900103),
    _rule(r"\bab\b", ("headers",), 900104),
    _rule("<b", ("path",), 900105),
)


def _lines(request: Request, body: bytes | None, kind: str, wanted: frozenset[str]) -> set[str]:
    return set(request_text(request, body, kind, wanted).split("\n"))


def test_every_value_is_a_line_of_the_screened_text():
    wanted = frozenset(t for r in _ALL for t in r.targets)
    for gen in (attacks, benign):
        for label, request, body, kind in gen():
            lines = _lines(request, body, kind, wanted)
            for texts in request_values(request, body, kind, wanted).values():
                for text in texts:
                    if "\n" not in text:  # (a value with a newline is several lines)
                        assert text in lines, (label, text)


def test_screen_finds_whatever_scan_finds_on_the_corpora():
    matcher = CompiledRules(_P1)
    assert matcher.screener is not None  # the default rule set is screened
    clean = 0
    for gen in (attacks, benign):
        for label, request, body, kind in gen():
            text = request_text(request, body, kind, matcher.targets)
            found = matcher.scan(request_values(request, body, kind, matcher.targets))
            screened = matcher.screen(text)
            assert screened or not found, label
            clean += not screened
    assert clean > 1000  # and it does say "clean" for the benign requests


def test_screen_keeps_anchors_per_value():
    """`^` and `$` are each value's edges: a value that is not first on its line set still
    matches an anchored rule."""
    matcher = CompiledRules((_rule("^drop$"),))
    request = Request("GET", "/x?a=1&b=drop&c=3", [(b"user-agent", b"curl")])
    assert matcher.screen(request_text(request, None, "", matcher.targets))
    assert matcher.scan(request_values(request, None, "", matcher.targets))


def test_rules_that_break_the_screen_leave_it_off():
    assert CompiledRules((_rule(r"\Adrop"),)).screener is None  # whole-buffer anchor
    assert CompiledRules((_rule("[\\r\\n]"),)).screener is None  # matches the line breaks
    assert CompiledRules((_rule("(?-m)^drop"),)).screener is None
    # without a screen every request is scanned value by value, and still caught
    waf = RouteWaf("t", WafConfig(active=(_rule("[\\r\\n]"),)))
    assert waf.inspect(Request("GET", "/x?a=1%0a2", [])).attack
    assert not waf.inspect(Request("GET", "/x?a=12", [])).attack


_TEXT = st.text(alphabet="ab=&%+;\\'\"<>/. -_\n\x00é0123456789", max_size=30)


@settings(max_examples=300, deadline=None)
@given(query=_TEXT, path=_TEXT, cookie=_TEXT, header=_TEXT)
def test_screen_never_misses_on_generated_requests(query, path, cookie, header):
    matcher = compile_rules(_GENERATED)  # (compiled once for every example)
    assert matcher.screener is not None
    headers = [(b"cookie", cookie.encode()), (b"x-thing", header.encode())]
    request = Request("GET", "/" + path.replace("?", "") + "?" + query, headers)
    found = matcher.scan(request_values(request, None, "", matcher.targets))
    assert matcher.screen(request_text(request, None, "", matcher.targets)) or not found


def test_screen_in_parts_finds_whatever_scan_finds_on_the_corpora():
    """`screen_request` (request line, headers and body screened apart, clean parts
    remembered) flags every request `scan` flags: the first time, and again when its parts
    come back from the memo (each corpus twice, in a fresh rule set)."""
    matcher = CompiledRules(_P1)
    cases = [case for gen in (attacks, benign) for case in gen()]
    for _ in range(2):
        clean = 0
        for label, request, body, kind in cases:
            found = matcher.scan(request_values(request, body, kind, matcher.targets))
            screened = matcher.screen_request(request, body, kind)
            assert screened or not found, label
            # (and never flags what the one-text screen passes: each part is a run of its lines)
            assert not screened or matcher.screen(
                request_text(request, body, kind, matcher.targets)
            )
            clean += not screened
        assert clean > 1000
    assert matcher.clean_lines and matcher.clean_heads  # the memo was used


def test_a_remembered_part_does_not_hide_an_attack_in_another():
    matcher = CompiledRules(_P1)
    ua = (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0")
    clean = Request("GET", "/search?q=red+shoes&page=2", [ua, (b"cookie", b"session=abc123")])
    assert not matcher.screen_request(clean, None, "")
    assert ("GET", "/search?q=red+shoes&page=2") in matcher.clean_lines
    assert ((ua[1],), (b"session=abc123",)) in matcher.clean_heads
    # the same request line, an attack in a header; the same headers, an attack in the query
    attack_header = Request("GET", clean.target, [(b"user-agent", b"<script>alert(1)</script>")])
    assert matcher.screen_request(attack_header, None, "")
    attack_query = Request("GET", "/search?q=1'+UNION+SELECT+password+FROM+users--", clean.headers)
    assert matcher.screen_request(attack_query, None, "")
    attack_body = (b"q=<script>alert(1)</script>", "form")
    assert matcher.screen_request(clean, *attack_body)  # bodies are never remembered
    assert matcher.screen_request(clean, *attack_body)
    waf = RouteWaf("t", WafConfig(active=_P1))
    for request in (attack_header, attack_query):
        assert waf.inspect(request).attack


def test_the_memo_is_bounded():
    from l7.waf.matcher import _MEMO_TARGET, MEMO_ENTRIES

    matcher = CompiledRules(_P1)
    for i in range(MEMO_ENTRIES + 50):
        assert not matcher.screen_request(Request("GET", f"/item/{i}", []), None, "")
        assert len(matcher.clean_lines) <= MEMO_ENTRIES
    assert ("GET", "/item/0") not in matcher.clean_lines  # (emptied when full)
    assert ("GET", f"/item/{MEMO_ENTRIES + 49}") in matcher.clean_lines
    long = Request("GET", "/" + "a" * _MEMO_TARGET, [])
    assert not matcher.screen_request(long, None, "")
    assert ("GET", long.target) not in matcher.clean_lines


@settings(max_examples=300, deadline=None)
@given(query=_TEXT, path=_TEXT, cookie=_TEXT, header=_TEXT, again=st.booleans())
def test_screen_in_parts_never_misses_on_generated_requests(query, path, cookie, header, again):
    matcher = compile_rules(_GENERATED)  # (one memo across the examples, as in a process)
    headers = [(b"cookie", cookie.encode()), (b"x-thing", header.encode())]
    request = Request("GET", "/" + path.replace("?", "") + "?" + query, headers)
    found = matcher.scan(request_values(request, None, "", matcher.targets))
    for _ in range(2 if again else 1):
        assert matcher.screen_request(request, None, "") or not found


def test_a_query_value_holding_equals_signs_is_one_line():
    # (a plain query is cut at its first "=" per piece, not at every "=")
    matcher = CompiledRules((_rule("^1=2$", ("query",)),))
    request = Request("GET", "/x?a=1=2&b=c", [])
    assert "1=2" in _lines(request, None, "", matcher.targets)
    assert matcher.screen(request_text(request, None, "", matcher.targets))
    assert [r.id for r in matcher.scan(request_values(request, None, "", matcher.targets))] == [
        900001
    ]
    plain = Request("GET", "/x?a=1&b=2", [])
    assert _lines(plain, None, "", matcher.targets) >= {"a", "1", "b", "2"}


# `raw` rules that all need a `%`, so the screen leaves plain request-targets out
_RAW_PERCENT = (*_P1, _rule("%[ab]", ("raw",), 900201), _rule("^/a%", ("raw",), 900202))


@settings(max_examples=300, deadline=None)
@given(query=_TEXT, path=_TEXT)
def test_screen_in_parts_never_misses_when_it_leaves_plain_targets_out(query, path):
    matcher = compile_rules(_RAW_PERCENT)
    assert matcher.raw_needs_percent
    matcher.clean_lines.clear()  # (compiled once for every example: no verdict carried over)
    request = Request("GET", "/" + path.replace("?", "") + "?" + query, [])
    found = matcher.scan(request_values(request, None, "", matcher.targets))
    assert matcher.screen_request(request, None, "") or not found


def test_a_raw_rule_without_a_percent_keeps_the_target_screened():
    matcher = CompiledRules((_rule("^/admin", ("raw",), 900203),))
    assert not matcher.raw_needs_percent
    assert matcher.screen_request(Request("GET", "/admin?x=1", []), None, "")
