"""Do two source trees' judges give the same scores? The `default` policy's values scored
through the micro-batcher, each tests/reply_cases.py text alone and all of them at once, in this
checkout and in a baseline tree (a check, not a benchmark: speed work must not move a score).

    python bench/same_scores.py --baseline-tree /tmp/base
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SCORE = """
import asyncio, json, sys
sys.path.insert(0, sys.argv[1])
from reply_cases import ASK_TEXT, BENIGN, EMBEDDED, VIOLENT
from vilmo.judge.batcher import MicroBatcher
from vilmo.judge.classifier import ScoreInput
from vilmo.judge.value_model import BuiltinClassifier
from vilmo.policy import load_policy
from vilmo.verdict import rules_of
ids = list(rules_of(load_policy("vilmo/policies/default.yaml")))
texts = {**{f"embedded-{k}": v for k, v in EMBEDDED.items()}, **BENIGN, "violent": VIOLENT}
async def main():
    batcher = MicroBatcher(BuiltinClassifier(cache_size=0))
    out = {}
    for name, text in texts.items():
        out["alone:" + name] = (await batcher.score(ScoreInput(text, ASK_TEXT), ids)).violation
    together = await batcher.score_many([ScoreInput(t, ASK_TEXT) for t in texts.values()], ids)
    out.update({"together:" + n: s.violation for n, s in zip(texts, together)})
    await batcher.aclose()
    return out
print(json.dumps(asyncio.run(main())))
"""


def scores(tree: Path) -> dict[str, dict[str, float]]:
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", SCORE, str(REPO / "tests")], env=env, cwd=tree,
                         check=True, capture_output=True, text=True).stdout
    found: dict[str, dict[str, float]] = json.loads(out.strip().splitlines()[-1])
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline-tree", type=Path, required=True)
    args = parser.parse_args()
    before, after = scores(args.baseline_tree.resolve()), scores(REPO)
    worst = max(abs(before[k][v] - after[k][v]) for k in before for v in before[k])
    print(json.dumps({"cases": len(before), "identical": before == after,
                      "largest_difference": worst}))


if __name__ == "__main__":
    main()
