"""The WAF against the corpora in tests/waf_corpus/: detection and false-positive rates.

Run with `-s` to see the report. The floors: at the default paranoia level (1) under 1% of
the benign requests are blocked (the issue's bound; 0 of 1,050 when written), at least 95%
of the attack corpus is (the rules were written with it in view: 370 of 373 when written,
the misses being warnings that score under the threshold alone), and at least 75% of the
held-out payloads, written after the rules and never tuned against (47 of 57 when written):
the honest estimate for payloads nobody has seen.
"""

from __future__ import annotations

import collections

from l7.waf.config import WafConfig
from l7.waf.rules import builtin_rules
from l7.waf.stage import RouteWaf
from tests.waf_corpus.corpus import attacks, benign


def _waf(paranoia: int) -> RouteWaf:
    active = tuple(r for r in builtin_rules() if r.paranoia <= paranoia)
    return RouteWaf("corpus", WafConfig(paranoia=paranoia, active=active))


def _rates(paranoia: int) -> tuple[dict[str, tuple[int, int]], int, int, list[str]]:
    waf = _waf(paranoia)
    total: collections.Counter[str] = collections.Counter()
    caught: collections.Counter[str] = collections.Counter()
    for label, request, body, kind in attacks():
        category = label.split(":", 1)[0]
        total[category] += 1
        caught[category] += waf.inspect(request, body, kind).attack
    flagged, seen = [], 0
    for label, request, body, kind in benign():
        seen += 1
        verdict = waf.inspect(request, body, kind)
        if verdict.attack:
            flagged.append(f"{label} ({verdict.ids})")
    return {c: (caught[c], total[c]) for c in sorted(total)}, len(flagged), seen, flagged


def test_corpora_sizes():
    counts = collections.Counter(label.split(":", 1)[0] for label, *_ in attacks())
    assert sum(counts.values()) >= 300
    assert {"sqli", "xss", "traversal", "cmdi", "protocol"} <= set(counts)
    assert sum(1 for _ in benign()) >= 1000


def test_detection_and_false_positives_at_default_paranoia():
    by_category, fp, seen, flagged = _rates(1)
    tuned = [v for c, v in by_category.items() if c != "heldout"]
    caught, total = sum(c for c, _ in tuned), sum(t for _, t in tuned)
    held_caught, held_total = by_category["heldout"]
    print(
        f"\nparanoia 1: detection {caught}/{total} = {caught / total:.1%}; held out "
        f"{held_caught}/{held_total} = {held_caught / held_total:.1%}; false positives "
        f"{fp}/{seen} = {fp / seen:.2%}"
    )
    for category, (c, t) in by_category.items():
        print(f"  {category}: {c}/{t}")
    assert fp / seen < 0.01, flagged
    assert caught / total >= 0.95
    assert held_caught / held_total >= 0.75
    for category, (c, t) in by_category.items():
        assert c / t >= 0.75, category  # no category left behind


def test_higher_paranoia_levels_report():
    """Paranoia 2 must stay usable (under 1% false positives here); 3 and 4 trade false
    positives for detection, as CRS's do: reported, not bounded."""
    for level in (2, 3, 4):
        by_category, fp, seen, _ = _rates(level)
        caught = sum(c for c, _ in by_category.values())
        total = sum(t for _, t in by_category.values())
        print(f"\nparanoia {level}: detection {caught}/{total}, false positives {fp}/{seen}")
        if level == 2:
            assert fp / seen < 0.01
