"""What redacting a long audit text costs with short secrets configured (review r3: a 4 MB
prompt with a placeholder key such as ``EMPTY`` held the event loop 0.24 s in a lookbehind
regex). Baseline: that regex, run in the same process on the same text.

    python bench/bench_redaction.py [--mb 4] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.harness import cpu_model
from proxy.redaction import REDACTED, Redactor

SECRETS = ["sk-proj-0123456789abcdef", "EMPTY", "dummy"]


def _regex_baseline(text: str) -> str:
    short = [re.escape(s) for s in SECRETS if len(s) < Redactor.MIN_SUBSTRING]
    for secret in (s for s in SECRETS if len(s) >= Redactor.MIN_SUBSTRING):
        text = text.replace(secret, REDACTED)
    return re.sub(rf"(?<![\w-])(?:{'|'.join(short)})(?![\w-])", REDACTED, text)


def _best(function: object, text: str, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        function(text)  # type: ignore[operator]
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    line = "Please summarise this EMPTY-ish report, dummy data and all: lorem ipsum dolor. "
    text = (line * int(args.mb * 1e6 / len(line) + 1))[: int(args.mb * 1e6)]
    redactor = Redactor(SECRETS)
    assert redactor(text) == _regex_baseline(text)
    before = _best(_regex_baseline, text, args.rounds)
    after = _best(redactor, text, args.rounds)
    print(f"CPU {cpu_model()}, {os.cpu_count()} cores; {args.mb:g} MB text, best of {args.rounds}")
    print(f"  regex baseline {before * 1e3:.1f} ms, Redactor {after * 1e3:.1f} ms "
          f"(x{after / before:.3f} of the baseline)")


if __name__ == "__main__":
    main()
