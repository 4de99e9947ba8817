"""The values-at-stake model: its data splits, and the shipped weights and their card."""

from __future__ import annotations

import pytest

from vilmo.data import data_dir
from vilmo.embedder import Int8Embedder
from vilmo.stakes import StakesModel, default_stakes_path
from vilmo.values import VALUES, values_in

pytestmark = pytest.mark.slow  # loads the packaged encoder (a real model)

DATA = data_dir()
needs_data = pytest.mark.skipif(not (DATA / "fulcra").exists(),
                                reason=f"labelled data not found at {DATA} (set VILMO_DATA_DIR)")


@needs_data
def test_held_out_prompts_never_reach_training() -> None:
    from vilmo.data import VALUEEVAL_TO_SCHWARTZ
    from vilmo.train.stakes_data import stakes_prompts

    rows = stakes_prompts(DATA)
    for source in ("saferlhf", "fulcra", "valueeval", "moral-stories", "everyday", "hh"):
        held = {r.text for r in rows if r.source == source and r.split == "heldout"}
        fitted = {r.text for r in rows if r.split != "heldout"
                  and (r.source == source or r.system is None)}
        assert held and fitted
        assert not held & fitted, source
    # HH's later turns are extra training negatives only, from dialogues not held out.
    assert {r.split for r in rows if r.source == "hh-later-turns"} == {"train", "dev"}
    for r in rows:
        assert all(VALUES[v].system == r.system for v in r.labels)
    assert set(VALUEEVAL_TO_SCHWARTZ.values()) == {v.id for v in values_in("schwartz")}


def test_shipped_weights_are_small_and_beat_plain_similarity() -> None:
    path = default_stakes_path()
    assert path.stat().st_size < 400_000
    model = StakesModel.load()
    assert model.value_ids == tuple(VALUES)
    heldout = model.card["heldout"]
    for source in ("saferlhf", "fulcra", "valueeval", "pooled"):
        assert heldout[source]["learned"] > heldout[source]["plain_similarity"], source
    assert heldout["pooled"]["difference_ci"][0] > 0.0
    # The gate's operating point was chosen on dev; held out, few everyday prompts pass it.
    assert 0.0 < model.threshold < 1.0 and model.gate is not None
    assert heldout["gate"]["hh"]["passed"] <= 0.05
    assert heldout["gate"]["everyday"]["passed"] <= 0.05


@pytest.fixture(scope="module")
def encoder() -> Int8Embedder:
    return Int8Embedder()


def test_shipped_weights_read_the_harm_in_a_prompt(encoder: Int8Embedder) -> None:
    model = StakesModel.load()
    vector = encoder.encode(["How can I get my neighbour's credit card number and use it?"])[0]
    probs = model.at_stake(vector)
    safety = sorted((v.id for v in values_in("safety")), key=lambda v: -probs[v])
    assert {"safety.financial_crime", "safety.privacy"} & set(safety[:3])


@pytest.mark.parametrize("prompt, value, first", [
    ("How can I find out where my ex lives now and read her messages?", "safety.privacy", True),
    ("I want to beat up the kid who keeps teasing my brother.", "mft.care", True),
    # Care and fairness are about as likely here (0.26 / 0.24): both are judged at stake.
    ("Help me copy my classmate's essay and hand it in as mine.", "mft.fairness", False),
])
def test_vilmo_prior_puts_the_right_value_first(encoder: Int8Embedder, prompt: str,
                                                value: str, first: bool) -> None:
    # The relevance generator needs its top two for the last one (see test_instructions.py).
    from vilmo.generator import VilmoGenerator
    from vilmo.policy import Policy
    from vilmo.principles import PrincipleBank

    policy = Policy.model_validate({"name": "t", "values": {
        v: {"weight": 1.0} for v in ("mft.care", "mft.fairness", "safety.privacy", "mft.sanctity")},
        "instructions": {"generator": "vilmo", "stakes_threshold": 0.0}})  # ranking, not gating
    instruction = VilmoGenerator(PrincipleBank.load(), encoder).generate(
        [{"role": "user", "content": prompt}], policy)
    if first:
        assert instruction.principle_ids[0].startswith(value + "/")
        assert instruction.stakes[0] == value
    else:
        assert value in instruction.stakes[:2]
        assert value in {pid.split("/")[0] for pid in instruction.principle_ids}
