"""A unit test of the learning algorithm on a simulated target, not evidence that VILMO helps a
real model.

The simulated target's violation rate for a prompt depends on a hidden group of the prompt
(visible only through its embedding) and on the candidate's value, principle and style; each
group has one truly best (principle, style). The loop samples and scores it, the scorer is fitted,
and on new prompts of the same groups the trained generator must pick the truly best candidate
for clearly more prompts than the relevance generator does.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from generator_fakes import VALUES3, ReplyReader, SimulatedTarget, World, parse_line, small_bank

from vilmo.generator import VilmoGenerator
from vilmo.instructions import RelevanceGenerator
from vilmo.policy import Policy
from vilmo.stakes import StakesModel
from vilmo.train.generator import LoopSettings, collect, read_records
from vilmo.train.scorer_fit import fit_scorer


def _policy(generator: str, weights: str | None = None) -> Policy:
    return Policy.model_validate({
        "name": "sim", "values": {v: {"weight": 1.0} for v in VALUES3},
        "instructions": {"generator": generator, "max_principles": 1, "weights": weights}})


@pytest.mark.slow  # trains a scorer over a simulated world (10 s)
def test_trained_generator_picks_the_truly_best_instruction_more_often(tmp_path: Path) -> None:
    world = World()
    bank = small_bank()
    generator = VilmoGenerator(bank, world.encoder, StakesModel.uniform())
    train = world.prompts(12, "train")
    policy = _policy("vilmo")
    summary = asyncio.run(collect(train, policy, generator.retriever, SimulatedTarget(world),
                                  ReplyReader(), tmp_path, LoopSettings(k=4, candidates=18),
                                  progress=False))
    assert summary.pairs_done == len(train) * 18
    scorer = fit_scorer(read_records(tmp_path), policy, generator.retriever)
    scorer.save(tmp_path)

    trained = _policy("vilmo", str(tmp_path))
    relevance = RelevanceGenerator(bank, world.encoder)
    held_out = world.prompts(10, "heldout")
    hits = {"vilmo": 0, "relevance": 0}
    for prompt in held_out:
        messages = [{"role": "user", "content": prompt}]
        chosen = {"vilmo": parse_line(generator.generate(messages, trained).text),
                  "relevance": parse_line(relevance.generate(messages, _policy("relevance")).text)}
        for name, pick in chosen.items():
            hits[name] += pick == world.best(prompt)
    n = len(held_out)
    assert hits["vilmo"] >= 0.6 * n, hits
    assert hits["vilmo"] - hits["relevance"] >= 0.4 * n, hits
