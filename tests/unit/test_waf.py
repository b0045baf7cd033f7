"""The WAF's sans-IO parts: decoding, what each target sees, rule files, the `waf` config
with its located errors, and scoring (threshold, paranoia, disable, detect/block)."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from l4lb.config.load import load_text
from l4lb.errors import ConfigErrors
from l7.model import Request
from l7.waf.config import WafConfig
from l7.waf.decode import normalise
from l7.waf.extract import body_kind, request_values
from l7.waf.rules import TARGETS, builtin_rules, load_rule_file
from l7.waf.stage import RouteWaf

HEAD = """
[listener.web]
bind = "127.0.0.1:8080"
protocol = "http"
pool = "p"
[pool.p]
servers = [{name = "a", address = "127.0.0.1:9"}]
"""


def _waf(paranoia: int = 1, **kw) -> RouteWaf:
    active = tuple(r for r in builtin_rules() if r.paranoia <= paranoia)
    return RouteWaf("t", WafConfig(paranoia=paranoia, active=active, **kw))


def _get(target: str, *headers: tuple[bytes, bytes]) -> Request:
    return Request("GET", target, [(b"host", b"x"), *headers])


# -- decoding ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "plain"),
    [
        ("%3Cscript%3E", "<script>"),
        ("%253Cscript%253E", "<script>"),  # double
        ("%25253Csvg", "<svg"),  # triple
        ("&lt;img&gt;", "<img>"),
        ("&#60;&#x3C;", "<<"),
        ("&amp;lt;b&amp;gt;", "<b>"),  # entity inside entity
        ("%26lt%3Bscript", "<script"),  # entity inside percent
        ("\\u003cscript\\x3e", "<script>"),
        ("%u003Cscript%u003E", "<script>"),
        ("\uff1cscript\uff1e", "<script>"),  # full-width, folded by NFKC
        ("caf%C3%A9", "café"),
        ("plain text, no escapes", "plain text, no escapes"),
    ],
)
def test_normalise(raw: str, plain: str):
    assert normalise(raw) == plain


def test_plain_values_are_not_copied():
    text = "just-a-value_123"
    assert normalise(text) is text


@given(st.text(max_size=200))
def test_normalise_takes_any_text(text: str):
    assert isinstance(normalise(text), str)


# -- targets -------------------------------------------------------------------------------


def test_values_per_target():
    request = Request(
        "POST",
        "/a%2Fb/c?q=%27x%27&tag=a&tag=b",
        [
            (b"host", b"x"),
            (b"user-agent", b"UA/1.0"),
            (b"accept", b"text/html"),  # a fixed grammar: not inspected
            (b"sec-fetch-mode", b"navigate"),
            (b"cookie", b"sid=abc; pref=%3Cb%3E"),
            (b"content-type", b"application/json"),
        ],
    )
    body = json.dumps({"k": ["v", {"deep": "&lt;x&gt;"}], "n": 5}).encode()
    got = request_values(request, body, "json", frozenset(TARGETS))
    assert got["method"] == ["POST"]
    assert got["raw"] == ["/a%2Fb/c?q=%27x%27&tag=a&tag=b"]
    assert got["path"] == ["/a/b/c"]
    assert got["query"] == ["q", "'x'", "tag", "a", "tag", "b"]
    assert got["cookies"] == ["sid", "abc", "pref", "<b>"]
    assert got["headers"] == ["UA/1.0"]
    assert sorted(got["form"]) == sorted(["k", "v", "deep", "<x>", "n"])  # keys, strings
    assert "body" not in got


def test_bodies_by_content_type():
    assert body_kind(b"application/x-www-form-urlencoded; charset=UTF-8") == "form"
    assert body_kind(b"application/json") == body_kind(b"application/vnd.api+json") == "json"
    assert body_kind(b"text/plain") == body_kind(b"application/soap+xml") == "text"
    assert body_kind(b"multipart/form-data; boundary=x") == "text"
    assert body_kind(b"image/png") == body_kind(b"application/octet-stream") == ""
    assert body_kind(None) == ""
    request = Request("POST", "/", [(b"host", b"x")])
    every = frozenset(TARGETS)
    assert request_values(request, b"a=1&b=%3Cx", "form", every)["form"] == ["a", "1", "b", "<x"]
    assert request_values(request, b"{not json", "json", every)["body"] == ["{not json"]
    assert request_values(request, b"[" * 100_000, "json", every)["body"]  # too deep: as text


# -- scoring -------------------------------------------------------------------------------


def test_a_critical_rule_reaches_the_default_threshold():
    verdict = _waf().inspect(_get("/search?q=1%20UNION%20SELECT%20password%20FROM%20users"))
    assert verdict.attack and verdict.score >= 5
    assert "942100" in verdict.ids.split(",")


def test_one_warning_stays_under_the_threshold():
    verdict = _waf().inspect(_get("/search?q=%G0"))  # invalid percent-encoding: a warning
    assert [r.id for r in verdict.rules] == [920110]
    assert verdict.score == 3 and not verdict.attack


def test_threshold_and_paranoia():
    request = _get("/search?q=" + "select%20name%20from%20the%20list")
    assert not _waf(1).inspect(request).rules  # plain English at level 1
    assert _waf(2).inspect(request).ids == "942250"  # "select ... from" at level 2
    assert _waf(2).inspect(request).attack is False  # an error (4) alone: under 5
    assert _waf(2, threshold=4).inspect(request).attack


def test_benign_search_with_quotes_and_angle_brackets_passes():
    for q in ('"red shoes" <size 10>', "O'Reilly & Sons", "a < b > c", "<3", "tom's diner"):
        assert not _waf().inspect(_get("/search?q=" + quote(q))).attack, q


def test_rules_see_only_their_targets():
    # 930130 (restricted files) looks at the path only: the same text in a query is fine.
    waf = _waf()
    assert "930130" in waf.inspect(_get("/.git/config")).ids
    assert "930130" not in waf.inspect(_get("/help?topic=/.git/config")).ids
    # 911100 (TRACE) looks at the method only.
    assert waf.inspect(Request("TRACE", "/", [(b"host", b"x")])).ids == "911100"
    assert not waf.inspect(_get("/search?q=trace")).rules


# -- rule files and config -----------------------------------------------------------------


def test_builtin_rules_are_valid_and_cover_the_categories():
    rules = builtin_rules()
    assert len({r.id for r in rules}) == len(rules)
    assert {"sqli", "xss", "traversal", "cmdi", "protocol"} <= {r.category for r in rules}
    assert all(900000 <= r.id <= 999999 for r in rules)


def _load(tmp_path: Path, listener_waf: str, rules: str | None = None):
    if rules is not None:
        (tmp_path / "local.toml").write_text(rules)
    text = HEAD.replace('pool = "p"\n', f'pool = "p"\nwaf = {listener_waf}\n', 1)
    return load_text(text, str(tmp_path / "site.toml"), resolve=False)


def _errors(tmp_path: Path, listener_waf: str, rules: str | None = None) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        _load(tmp_path, listener_waf, rules)
    return [str(e).replace(str(tmp_path) + "/", "") for e in info.value.errors]


def test_config_values(tmp_path):
    config = _load(tmp_path, "true").listeners[0].waf
    assert (config.mode, config.paranoia, config.threshold, config.body_limit) == (
        "block",
        1,
        5,
        128 * 1024,
    )
    assert all(r.paranoia == 1 for r in config.active)
    config = _load(tmp_path, '{mode = "detect", paranoia = 3, disable = [942100]}').listeners[0]
    assert config.waf.mode == "detect" and 942100 not in {r.id for r in config.waf.active}
    assert {r.paranoia for r in config.waf.active} == {1, 2, 3}
    assert _load(tmp_path, "false").listeners[0].waf.enabled is False


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            '{mode = "log"}',
            "site.toml:6: listener.web.waf.mode: 'log' is not one of the choices "
            "(allowed: block, detect)",
        ),
        (
            "{paranoia = 5}",
            "site.toml:6: listener.web.waf.paranoia: 5 is out of range (allowed: 1 to 4)",
        ),
        (
            "{disable = [942100, 1234]}",
            "site.toml:6: listener.web.waf.disable[1]: unknown rule id 1234 (allowed: ids of "
            "the rules shipped with l4lb (docs/CONFIG.md) or in `rules` files)",
        ),
        (
            '{body_limit = "1m"}',
            "site.toml:6: listener.web.waf.body_limit: 1048576 is over 262144 "
            '(allowed: a size up to "256k"; 0: no bodies)',
        ),
        (
            "{treshold = 3}",
            "site.toml:6: listener.web.waf.treshold: unknown key 'treshold'; did you mean "
            "'threshold'? (allowed: mode, paranoia, threshold, disable, rules, body_limit)",
        ),
    ],
)
def test_config_errors(tmp_path, value: str, expected: str):
    errors = _errors(tmp_path, value)
    assert errors == [expected] or errors[0].startswith(expected.split(" (allowed")[0]), errors


RULES = """
[[rule]]
id = 100001
category = "custom"
severity = "error"
targets = ["headers"]
pattern = '''^internal-only$'''
message = "a header only our own tools send"
"""


def test_waf_needs_an_http_listener(tmp_path):
    text = HEAD.replace('protocol = "http"\n', 'protocol = "tcp"\nwaf = true\n')
    with pytest.raises(ConfigErrors) as info:
        load_text(text, "site.toml", resolve=False)
    assert str(info.value) == (
        "site.toml:5: listener.web.waf: only http(s) listeners have a WAF "
        '(allowed: protocol = "http")'
    )


def test_route_waf(tmp_path):
    text = HEAD + '[[listener.web.routes]]\nname = "r"\npool = "p"\nwaf = {disable = [7]}\n'
    with pytest.raises(ConfigErrors) as info:
        load_text(text, "site.toml", resolve=False)
    assert str(info.value).startswith(
        "site.toml:11: listener.web.routes[0].waf.disable[0]: unknown rule id 7"
    )
    text = text.replace("{disable = [7]}", '{mode = "detect"}')
    route = load_text(text, "site.toml", resolve=False).listeners[0].routes[0]
    assert route.waf.mode == "detect" and route.waf.active


def test_user_rule_files(tmp_path):
    config = _load(tmp_path, '{rules = ["local.toml"], disable = [100001]}', RULES)
    assert 100001 not in {r.id for r in config.listeners[0].waf.active}
    config = _load(tmp_path, '{rules = ["local.toml"], threshold = 4}', RULES).listeners[0]
    waf = RouteWaf("t", config.waf)
    verdict = waf.inspect(_get("/", (b"x-tool", b"internal-only")))
    assert verdict.ids == "100001" and verdict.attack


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        (
            RULES.replace("'''^internal-only$'''", "'''(a)\\1'''"),
            "local.toml:7: rule[0].pattern: Back-references are unsupported.",
        ),
        (RULES.replace("100001", "942100"), "local.toml:3: rule[0].id: rule id 942100 is already"),
        (RULES.replace('["headers"]', '["everywhere"]'), "local.toml:6: rule[0].targets: unknown"),
        (RULES.replace('"error"', '"fatal"'), "local.toml:5: rule[0].severity: 'fatal' is not"),
        (RULES + RULES, "local.toml:11: rule[1].id: rule id 100001 is already used by rule[0]"),
        ("[[rule]\n", "local.toml: not valid TOML"),
    ],
)
def test_rule_file_errors_are_located(tmp_path, rules: str, expected: str):
    errors = _errors(tmp_path, '{rules = ["local.toml"]}', rules)
    assert errors[0].startswith(expected), errors


def test_bad_pattern_is_reported_even_when_its_rule_is_not_active(tmp_path):
    rules = RULES.replace('severity = "error"', "paranoia = 4")
    rules = rules.replace("^internal-only$", "(?<=a)b")  # look-behind
    errors = _errors(tmp_path, '{rules = ["local.toml"], paranoia = 1}', rules)
    assert errors[0].startswith("local.toml:7: rule[0].pattern:"), errors


def test_missing_rule_file(tmp_path):
    errors = _errors(tmp_path, '{rules = ["nope.toml"]}')
    assert errors[0].startswith("nope.toml: cannot read the rule file"), errors


def test_load_rule_file_reports_every_problem(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('[[rule]]\nid = 1\n[[rule]]\nid = "x"\ncategory = "a b"\n[extra]\n')
    rules, errors = load_rule_file(path)
    assert rules == ()
    assert len(errors) >= 4  # extra table, missing keys, bad id, bad category


@given(
    target=st.text(max_size=100).map(lambda t: "/" + t),
    value=st.binary(max_size=200),
    body=st.binary(max_size=300),
    kind=st.sampled_from(["", "form", "json", "text"]),
)
def test_any_request_is_inspected_without_error(target: str, value: bytes, body: bytes, kind):
    request = Request("POST", target, [(b"cookie", value), (b"user-agent", value)])
    verdict = _WAF.inspect(request, body, kind)
    assert verdict.score == sum(rule.score for rule in verdict.rules)


_WAF = _waf()
