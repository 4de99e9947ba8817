"""A small pilot on a real target after `vilmo train generator`: on held-out prompts, how often
does the target violate the policy under each generator's instruction? (A pilot measurement,
not a test; its size is stated in its output.)

Arms, same prompts and K for each: `none` (no instruction), `relevance`, `vilmo-prior` (values at
stake, no per-target scorer) and `vilmo-trained` (``--run-dir``'s scorer). Prints one JSON
object: each arm's mean violation (mean over prompts of the mean over K replies of the largest
policy-weighted classifier violation) with a 95 % bootstrap CI over prompts, and paired
differences to `vilmo-trained`.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/pilot_generator.py --target openai/gemma-3-270m \
        --api-base http://127.0.0.1:8008/v1 --run-dir runs/gemma --limit 30 --k 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
from typing import Any

import numpy as np

ARMS = ("none", "relevance", "vilmo-prior", "vilmo-trained")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--api-base", default=None)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--prompts", default="saferlhf:test")
    parser.add_argument("--limit", type=int, default=30)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--policy", default=None, help="the run's policy YAML (default: all values)")
    parser.add_argument("--classifier-dir", default=None, help="classifier weights (default: packaged)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    print(json.dumps(asyncio.run(pilot(args)), indent=1))


async def pilot(args: argparse.Namespace) -> dict[str, Any]:
    from vilmo.cli.train_generator import all_values_policy
    from vilmo.evaluation.target import TargetClient, TargetModel
    from vilmo.instruct.generator import VilmoGenerator
    from vilmo.instruct.instructions import NO_INSTRUCTION, apply_instruction
    from vilmo.instruct.principles import PrincipleBank
    from vilmo.judge.classifier import ScoreInput
    from vilmo.judge.embedder import Embedder
    from vilmo.judge.policy_classifier import PolicyClassifiers
    from vilmo.judge.value_model import BuiltinClassifier
    from vilmo.policy import load_policy
    from vilmo.train.generator import load_prompts, reply_violation

    base = load_policy(args.policy) if args.policy else all_values_policy()
    policies = {arm: base.model_copy(update={"instructions": base.instructions.model_copy(
        update={"generator": gen, "weights": weights})})
        for arm, gen, weights in (("relevance", "relevance", None), ("vilmo-prior", "vilmo", None),
                                  ("vilmo-trained", "vilmo", args.run_dir))}
    encoder = Embedder()
    generator = VilmoGenerator(PrincipleBank.load(), encoder)
    classifier = PolicyClassifiers(BuiltinClassifier(args.classifier_dir), encoder)(base)
    client = TargetClient(TargetModel(args.target, args.api_base, args.api_key,
                                      max_tokens=args.max_tokens, concurrency=args.concurrency))
    prompts = random.Random(args.seed).sample(load_prompts(args.prompts), args.limit)

    async def arm_rate(prompt: str, arm: str) -> float:
        messages = [{"role": "user", "content": prompt}]
        instruction = (NO_INSTRUCTION if arm == "none"
                       else generator.generate(messages, policies[arm]))
        placed = apply_instruction(messages, instruction, base.instructions.placement)
        replies = await client.sample(placed, args.k)
        scores = await asyncio.to_thread(classifier.score,
                                         [ScoreInput(r, prompt) for r in replies], list(base.values))
        return float(np.mean([reply_violation(s.violation, base) for s in scores]))

    rates = {arm: np.array(await asyncio.gather(*(arm_rate(p, arm) for p in prompts)))
             for arm in ARMS}
    n = len(prompts)
    out: dict[str, Any] = {"target": args.target, "prompts": n, "k": args.k,
                           "source": args.prompts, "costs": client.costs.as_dict()}
    for arm in ARMS:
        out[arm] = {"mean_violation": round(float(rates[arm].mean()), 4),
                    "ci": mean_ci(rates[arm])}
    for arm in ("none", "relevance", "vilmo-prior"):
        diff = rates["vilmo-trained"] - rates[arm]
        out[f"vilmo-trained minus {arm}"] = {
            "mean": round(float(diff.mean()), 4),
            "ci": mean_ci(diff)}
    return out


def mean_ci(values: np.ndarray) -> tuple[float, float]:
    """95 % bootstrap interval of the mean over prompts."""
    from vilmo.evaluation.metrics import bootstrap_ci

    def mean(ix: np.ndarray) -> float:
        return float(values[ix].mean())

    return bootstrap_ci(mean, len(values))


if __name__ == "__main__":
    main()
