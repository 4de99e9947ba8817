"""The VILMO generator's request-time behaviour: dispatch, budget, cache, weights by path."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from generator_fakes import VALUES3, TableEncoder, small_bank

from vilmo.instruct.generator import VilmoGenerator
from vilmo.instruct.instructions import HEADER, RelevanceGenerator
from vilmo.instruct.scorer import InstructionScorer, Projection
from vilmo.instruct.stakes import StakesModel
from vilmo.policy import Policy, PolicyError
from vilmo.types import Matrix

MESSAGES = [{"role": "user", "content": "a prompt about something"}]


class CountingEncoder(TableEncoder):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def encode(self, texts: Sequence[str]) -> Matrix:
        self.calls += 1
        return super().encode(texts)


def policy(**instructions: object) -> Policy:
    return Policy.model_validate({"name": "t", "values": {v: {"weight": 1.0} for v in VALUES3},
                                  "instructions": {"generator": "vilmo", **instructions}})


@pytest.fixture
def encoder() -> CountingEncoder:
    return CountingEncoder()


@pytest.fixture
def generator(encoder: CountingEncoder) -> VilmoGenerator:
    return VilmoGenerator(small_bank(), encoder, StakesModel.uniform())


def random_scorer(directory: Path, seed: int = 0) -> InstructionScorer:
    rng = np.random.default_rng(seed)

    def proj(k: int) -> Projection:
        return Projection(np.zeros(384, np.float32),
                          rng.standard_normal((384, k)).astype(np.float32), np.ones(k, np.float32))

    scorer = InstructionScorer(rng.standard_normal((46, 42)).astype(np.float32),
                               rng.standard_normal(4).astype(np.float32), 0.1, proj(16), proj(8),
                               {"target": "t"})
    scorer.save(directory)
    return scorer


def test_other_generators_are_served_as_before(generator: VilmoGenerator,
                                               encoder: CountingEncoder) -> None:
    relevance = RelevanceGenerator(small_bank(), encoder)
    for name in ("relevance", "none"):
        p = policy(generator=name)
        assert generator.generate(MESSAGES, p) == relevance.generate(MESSAGES, p)
    static = policy(generator="static", text="Be kind.")
    assert generator.generate(MESSAGES, static).text == "Be kind."


def test_prior_uses_policy_style_and_budget(generator: VilmoGenerator) -> None:
    instruction = generator.generate(MESSAGES, policy(max_principles=2, style="role"))
    assert instruction.generator == "vilmo" and instruction.text.startswith(HEADER)
    assert len(instruction.principle_ids) == 2
    assert instruction.text.count(" role]") == 2
    tight = VilmoGenerator(small_bank(), TableEncoder(), StakesModel.uniform(), max_chars=60)
    assert len(tight.generate(MESSAGES, policy(max_principles=3)).principle_ids) == 1


def test_repeated_prompt_is_cached_until_the_policy_changes(generator: VilmoGenerator,
                                                            encoder: CountingEncoder) -> None:
    p = policy()
    first = generator.generate(MESSAGES, p)
    calls = encoder.calls
    assert generator.generate(MESSAGES, p) is first
    assert generator.generate(MESSAGES, policy()) is first  # equal content, same key
    assert encoder.calls == calls
    generator.generate(MESSAGES, policy(max_principles=1))
    assert encoder.calls > calls


def test_scorer_weights_are_read_by_path_and_chosen_by_prediction(
        generator: VilmoGenerator, tmp_path: Path) -> None:
    scorer = random_scorer(tmp_path)
    loaded = InstructionScorer.load(tmp_path / "scorer.npz")
    p = policy(weights=str(tmp_path), max_principles=1)
    cs = generator.retriever.retrieve("a prompt about something", p, 8)
    assert np.allclose(loaded.predict(cs), scorer.predict(cs))
    best = cs.candidates[int(np.argmin(scorer.predict(cs)))]
    assert generator.generate(MESSAGES, p).text.endswith(best.text)
    assert loaded.card == {"target": "t"}
    relative = VilmoGenerator(small_bank(), TableEncoder(), StakesModel.uniform(),
                              base_dir=tmp_path.parent)
    assert relative.generate(MESSAGES, policy(weights=tmp_path.name)).principle_ids


def test_missing_weights_fail_loudly(generator: VilmoGenerator, tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="vilmo train generator") as caught:
        generator.check(policy(weights=str(tmp_path / "nowhere")))
    assert caught.value.issues[0].field == "instructions.weights"


def test_stakes_model_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    model = StakesModel(("mft.care", "safety.privacy"),
                        rng.standard_normal((2, 384)).astype(np.float32),
                        np.array([0.1, -0.2], np.float32),
                        {"similarity_calibration": {"a": 4.0, "b": -2.0}})
    model.save(tmp_path / "s.npz")
    again = StakesModel.load(tmp_path / "s.npz")
    v = rng.standard_normal(384).astype(np.float32)
    assert np.allclose(again.probabilities(v), model.probabilities(v))
    assert again.similarity_prior(0.5) == pytest.approx(0.5)
    assert again.index("safety.privacy") == 1 and again.index(None) is None
    assert StakesModel.uniform().at_stake(v)["mft.care"] == pytest.approx(0.5)


def test_a_policy_s_principles_are_worked_out_once_per_policy_object(
        generator: VilmoGenerator) -> None:
    """Per request, the retriever reuses the policy's pool (issue 16); an edited policy is a
    new object and gets its own, with its own weights."""
    first = policy()
    pool = generator.retriever.pool(first)
    assert generator.retriever.pool(first) is pool
    edited = Policy.model_validate({**first.model_dump(), "values": {
        v: {"weight": 0.0 if i == 0 else 1.0} for i, v in enumerate(VALUES3)}})
    other = generator.retriever.pool(edited)
    assert other is not pool
    assert [p.id for p in other.principles] == [p.id for p in pool.principles]
    assert other.weight_list != pool.weight_list
    assert [v for v, _ in other.value_columns] == list(VALUES3[1:])


def test_retrieval_ranks_as_one_principle_at_a_time_would(generator: VilmoGenerator) -> None:
    """The vectorised relevance (heads' column per principle, the similarity prior for one tied
    to no value) is the per-principle formula's, to the bit."""
    custom = Policy.model_validate({**policy().model_dump(), "principles": [
        {"id": "own", "text": "Answer calmly.", "weight": 0.7}]})
    stakes = generator.retriever.stakes
    vector = generator.retriever.embed("a prompt about something")
    probs = stakes.probabilities(vector)
    got = generator.retriever.retrieve("a prompt about something", custom, 50, ("imperative",),
                                       vector=vector, probs=probs)
    pool = generator.retriever.bank.for_policy(custom)
    matrix = generator.retriever.matrix(pool)
    similarity = matrix @ vector
    for c in got.candidates:
        column = stakes.index(c.principle.value)
        expected = (float(probs[column]) if column is not None
                    else stakes.similarity_prior(float(similarity[c.row])))
        assert c.stakes == expected
        assert c.similarity == float(similarity[c.row])
        assert c.weight == float(np.float32(c.principle.weight_in(custom)))
    assert any(c.principle.id == "custom/own" for c in got.candidates)


@pytest.mark.parametrize("damage", ["truncated zip", "0-d intercept", "wrong interaction shape"])
def test_a_corrupt_scorer_is_a_policy_error_naming_its_file(generator: VilmoGenerator,
                                                            tmp_path: Path, damage: str) -> None:
    """A truncated copy or arrays that do not fit fail when the policy is loaded (a PolicyError
    the policy store logs against the file), not as a BadZipFile / IndexError out of the store
    or on a request."""
    random_scorer(tmp_path)
    npz = tmp_path / "scorer.npz"
    if damage == "truncated zip":
        npz.write_bytes(npz.read_bytes()[:64])
    else:
        with np.load(npz) as d:
            arrays = dict(d)
        if damage == "0-d intercept":
            arrays["intercept"] = np.array(0.1, np.float32)
        else:
            arrays["interaction"] = arrays["interaction"][:, :-1]
        np.savez(npz, **arrays)
    with pytest.raises(PolicyError) as caught:
        generator.check(policy(weights=str(tmp_path)))
    issue = caught.value.issues[0]
    assert issue.field == "instructions.weights" and str(npz) in issue.message
