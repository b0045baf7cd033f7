"""The CPU cost of the WAF stage per request, in-process (no sockets), on the two corpora.

Each request of tests/waf_corpus/ (benign and attacks) is inspected by the stage's sans-IO
core (`RouteWaf.inspect`: extraction, decoding, Hyperscan scan, scoring) `--rounds` times;
the CPU time per request (time.process_time) is printed in microseconds, median of the
rounds, per corpus. What the stage adds to a request that is not inspected at all is one
dict lookup in the Exchange (routes without `waf`).

    .venv/bin/python bench/waf_stage.py [--paranoia 1] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from l7.waf.config import WafConfig
from l7.waf.rules import builtin_rules
from l7.waf.stage import RouteWaf
from tests.waf_corpus.corpus import attacks, benign


def per_request(waf: RouteWaf, samples: list, rounds: int) -> float:
    """Median over `rounds` of the CPU µs per request."""
    times = []
    for _ in range(rounds):
        start = time.process_time()
        for _, request, body, kind in samples:
            waf.inspect(request, body, kind)
        times.append((time.process_time() - start) / len(samples) * 1e6)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--paranoia", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    active = tuple(r for r in builtin_rules() if r.paranoia <= args.paranoia)
    start = time.process_time()
    waf = RouteWaf("bench", WafConfig(paranoia=args.paranoia, active=active))
    compile_ms = (time.process_time() - start) * 1000
    good, bad = list(benign()), list(attacks())
    gets = [s for s in good if s[2] is None]
    bodies = [s for s in good if s[2] is not None]
    print(
        f"# WAF stage, paranoia {args.paranoia}: {len(active)} rules, compiled in "
        f"{compile_ms:.0f} ms CPU\n"
    )
    print("| corpus | requests | CPU µs per request |")
    print("|---|---|---|")
    for name, samples in (
        ("benign, all", good),
        ("benign, no body", gets),
        ("benign, with a body", bodies),
        ("attacks", bad),
    ):
        print(f"| {name} | {len(samples)} | {per_request(waf, samples, args.rounds):.1f} |")


if __name__ == "__main__":
    main()
