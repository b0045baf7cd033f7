"""Which multi-pattern engine for the WAF: the same rules and values on each, CPU per request.

The rule set (paranoia 1) is compiled for each engine that is installed; then the values the
stage extracts from every request of tests/waf_corpus/ (decoding done once, beforehand, so
only matching is timed) are matched, `--rounds` times, and the CPU µs per request
(time.process_time, median) is printed with the compile time and whether each engine found
the same rules as Hyperscan. Engines:

- `hyperscan` (the one l7/waf/matcher.py uses): one database, all patterns at once;
- `google-re2`'s `re2.Set`: one automaton for all patterns, but it says only *which*
  patterns match, per value, which is all the WAF needs;
- Python `re`, one search per rule per value: the loop the issue rules out, as a baseline;
- `pyahocorasick` matches literal strings only: as a prefilter (each rule's longest literal)
  it would still need the regex loop for every candidate, so only its prefilter pass is
  timed, a lower bound of what it would cost.

    .venv/bin/pip install google-re2 pyahocorasick   # optional, for the comparison
    .venv/bin/python bench/waf_engines.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from l7.waf.extract import request_values
from l7.waf.matcher import CompiledRules
from l7.waf.rules import TARGETS, builtin_rules
from tests.waf_corpus.corpus import attacks, benign

EVERY = frozenset(TARGETS)


def timed(fn, rounds: int, n: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.process_time()
        fn()
        times.append((time.process_time() - start) / n * 1e6)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rules = tuple(r for r in builtin_rules() if r.paranoia <= 1)
    corpora = {"benign": list(benign()), "attacks": list(attacks())}
    values = {
        name: [request_values(req, body, kind, EVERY) for _, req, body, kind in samples]
        for name, samples in corpora.items()
    }
    rows = []

    start = time.process_time()
    hs = CompiledRules(rules)
    hs_ms = (time.process_time() - start) * 1000
    expected = {name: [{r.id for r in hs.scan(v)} for v in vs] for name, vs in values.items()}

    def run_hs(vs):
        return lambda: [hs.scan(v) for v in vs]

    rows.append(("hyperscan", hs_ms, {n: run_hs(vs) for n, vs in values.items()}, None))

    # Python re: one search per rule per value (the baseline).
    start = time.process_time()
    compiled = [
        (rule, re.compile(rule.pattern, re.S | (0 if rule.case_sensitive else re.I)))
        for rule in rules
    ]
    re_ms = (time.process_time() - start) * 1000

    def re_scan(v):
        found = set()
        for target, texts in v.items():
            for rule, rx in compiled:
                seen = target in rule.targets and rule.id not in found
                if seen and any(rx.search(t) for t in texts):
                    found.add(rule.id)
        return found

    rows.append(
        (
            "python re loop",
            re_ms,
            {n: (lambda vs=vs: [re_scan(v) for v in vs]) for n, vs in values.items()},
            re_scan,
        )
    )

    try:
        import re2
    except ImportError:
        re2 = None
    if re2 is not None:
        start = time.process_time()
        options = re2.Options()
        options.case_sensitive = False
        options.dot_nl = True
        sets, dropped = {}, []
        for target in TARGETS:
            chosen = [r for r in rules if target in r.targets]
            s = re2.Set.SearchSet(options)
            ids = []
            for rule in chosen:
                try:
                    s.Add(rule.pattern)
                    ids.append(rule.id)
                except re2.error:
                    dropped.append(rule.id)
            s.Compile()
            sets[target] = (s, ids)
        re2_ms = (time.process_time() - start) * 1000

        def re2_scan(v):
            found = set()
            for target, texts in v.items():
                s, ids = sets[target]
                for t in texts:
                    found.update(ids[i] for i in s.Match(t) or ())
            return found

        rows.append(
            (
                "google-re2 Set",
                re2_ms,
                {n: (lambda vs=vs: [re2_scan(v) for v in vs]) for n, vs in values.items()},
                re2_scan,
            )
        )
        if dropped:
            print(f"(re2 rejected rules {sorted(set(dropped))})")

    try:
        import ahocorasick
    except ImportError:
        ahocorasick = None
    if ahocorasick is not None:
        start = time.process_time()
        automaton = ahocorasick.Automaton()
        for rule in rules:
            literals = re.findall(r"[a-z_]{3,}", re.sub(r"\\.", " ", rule.pattern.lower()))
            if literals:
                automaton.add_word(max(literals, key=len), rule.id)
        automaton.make_automaton()
        ac_ms = (time.process_time() - start) * 1000

        def ac_scan(v):
            return {
                rid for texts in v.values() for t in texts for _, rid in automaton.iter(t.lower())
            }

        rows.append(
            (
                "pyahocorasick prefilter only",
                ac_ms,
                {n: (lambda vs=vs: [ac_scan(v) for v in vs]) for n, vs in values.items()},
                None,
            )
        )

    print("| engine | compile ms | benign µs/request | attacks µs/request | same rules |")
    print("|---|---|---|---|---|")
    for name, ms, runs, scan in rows:
        cost = {n: timed(fn, args.rounds, len(values[n])) for n, fn in runs.items()}
        same = "yes" if name == "hyperscan" else "-"
        if scan is not None:
            agree = sum(
                scan(v) == e for n in values for v, e in zip(values[n], expected[n], strict=True)
            )
            same = f"{agree}/{sum(len(v) for v in values.values())}"
        print(f"| {name} | {ms:.0f} | {cost['benign']:.1f} | {cost['attacks']:.1f} | {same} |")


if __name__ == "__main__":
    main()
