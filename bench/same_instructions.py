"""Whether two trees write the same instructions (issue 16: a faster step must not change them).

Builds the VILMO generator as the gateway does (the request reader, ``stakes.npz``, the judge's
second look, from the reader's bottom layers where the tree has them) in each tree, in a subprocess, and writes, for every prompt and policy, the
instruction text, its principle ids and the values at stake, uncached (``choose``). Prompts:
the benchmarks' grievance questions and ``vilmo/data/prompts/written_requests.jsonl``; policies:
the shipped ones and one with custom principles (one tied to no value). Exit status 1 when any
output differs.

    python bench/same_instructions.py --baseline-tree /tmp/base [--prompts 300]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from harness import ENV, REPO

DUMP = r"""
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from harness import prompts
from vilmo.instruct.generator import VilmoGenerator
from vilmo.instruct.principles import PrincipleBank
from vilmo.instruct.second_look import SecondLook
from vilmo.instruct.stakes import StakesModel
from vilmo.instruct.stakes_reader import shipped_reader
from vilmo.judge.embedder import OnnxEmbedder
from vilmo.judge.policy_classifier import PolicyClassifiers
from vilmo.policy import Policy, load_policy

# proxy.services.build_judge's judge, built from vilmo alone: harness puts this tree first on
# sys.path, so a tree's proxy package would be this one's
look = SecondLook(PolicyClassifiers(encoder=OnnxEmbedder(quantized=False)).builtin)
generator = VilmoGenerator(PrincipleBank.load(), shipped_reader(), StakesModel.load(),
                           second_look=look)
try:  # as the gateway serves it: the judge's passes from the reader's bottom layers
    from vilmo.instruct.shared_bottom import connect
except ImportError:  # a tree before them
    connect = None
states = connect(generator.reader, look.judge) if connect and generator.reader else None
shipped = sorted(Path(sys.argv[2], "vilmo", "policies").glob("*.yaml"))
policies = [load_policy(p) for p in shipped]
custom = policies[0].model_dump()
custom["name"] = "custom"
custom["principles"] = [
    {"id": "no-doses", "text": "Never give medication doses.", "value": "mft.care"},
    {"id": "plain-words", "text": "Answer disputes between neighbours calmly and fairly.",
     "instruction": "Keep to calm, fair words in a dispute.", "weight": 0.7}]
policies.append(Policy.model_validate(custom))
texts = prompts(int(sys.argv[1]))
written = Path(sys.argv[2], "vilmo", "data", "prompts", "written_requests.jsonl")
texts += [json.loads(line)["prompt"] for line in written.read_text("utf-8").splitlines() if line]
texts += ["", "   ", "hello"]
for policy in policies:
    generator.prepare(policy)
    for text in texts:
        got = generator.choose(text, policy)
        print(json.dumps([policy.name, text, got.text, got.principle_ids, got.stakes,
                          got.generator]))
if states is not None:
    print(f"{states.hits} judge passes from the reader's bottom layers", file=sys.stderr)
"""


def outputs(tree: Path, count: int) -> list[str]:
    env = {**ENV, "PYTHONPATH": str(tree)}
    done = subprocess.run([sys.executable, "-c", DUMP, str(count), str(tree), str(REPO / "bench")],
                          env=env, cwd=tree, capture_output=True, text=True, check=True)
    print(f"{tree}: " + "".join(line for line in done.stderr.splitlines(keepends=True)
                               if "judge passes" in line), end="")
    return done.stdout.splitlines()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline-tree", type=Path, required=True)
    parser.add_argument("--prompts", type=int, default=300)
    args = parser.parse_args()
    old, new = outputs(args.baseline_tree.resolve(), args.prompts), outputs(REPO, args.prompts)
    differ = [(a, b) for a, b in zip(old, new, strict=True) if a != b]
    with_text = sum(1 for line in new if json.loads(line)[2])
    print(f"{len(new)} (policy, prompt) outputs, {with_text} with an instruction; "
          f"{len(differ)} differ")
    for a, b in differ[:5]:
        print(f"  baseline: {a}\n  this:     {b}")
    sys.exit(1 if differ or len(old) != len(new) else 0)


if __name__ == "__main__":
    main()
