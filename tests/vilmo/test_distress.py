"""The distress detector (issue 13): its file, its two stages, and how the generator uses it
(the care principle first, the embedding only past the prefilter). Fakes for the reader; the
shipped weights are exercised in ``test_stake_aware.py``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vilmo.instruct.distress import (
    DISTRESS_PRINCIPLE,
    DistressDetector,
    default_distress_path,
    reader_features,
)
from vilmo.values import VALUES


def detector(threshold: float = 0.5) -> DistressDetector:
    """Fires when the first embedding dimension exceeds ``threshold`` and the reader's
    self-harm probability is above one half."""
    pre = np.zeros(1 + len(VALUES))
    pre[1 + list(VALUES).index("safety.self_harm")] = 1.0
    weights = np.zeros(384)
    weights[0] = 1.0
    return DistressDetector(pre, 0.0, 0.0, weights, 0.0, threshold, {"kind": "test"})


def test_save_and_load_keep_every_number(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    made = detector(0.25)
    made.save(path)
    loaded = DistressDetector.load(path)
    assert loaded.digest == made.digest and loaded.card == {"kind": "test"}


def test_the_shipped_detector_loads_and_fits_the_reader() -> None:
    shipped = DistressDetector.shipped()
    assert shipped is not None and default_distress_path().exists()
    assert shipped.prefilter_weights.shape == (1 + len(VALUES),)
    assert shipped.weights.shape == (384,)
    assert shipped.card["detector"]["dev_benign_fired"] <= 1  # chosen on dev: +1 of 241 at most


def test_prefilter_reads_the_readers_logits() -> None:
    probs = np.full(len(VALUES), 0.1, dtype=np.float32)
    assert not detector().looks_distressed(0.01, probs)
    probs[list(VALUES).index("safety.self_harm")] = 0.9
    assert detector().looks_distressed(0.01, probs)
    assert detector().looks_distressed(0.01, probs[:5])  # another reader: no prefilter
    assert np.isfinite(reader_features(1.0, np.zeros(len(VALUES)))).all()


def test_reader_features_are_the_clipped_logits_bit_for_bit() -> None:
    """Built without ``np.r_``/``np.clip`` (on every prompt's path to the upstream call): the
    same float64 logits as that formula, clipped ends, NaN and a list of floats included."""
    rng = np.random.default_rng(7)
    for _ in range(200):
        probs = rng.random(len(VALUES)).astype(np.float32)
        probs[rng.integers(len(VALUES))] = rng.choice([0.0, 1.0, np.nan])
        gate = float(rng.choice([0.0, 1.0, rng.random()]))
        for given in (probs, probs.tolist()):
            p = np.clip(np.r_[np.float64(gate), np.asarray(given, dtype=np.float64)],
                        1e-7, 1.0 - 1e-7)
            found = reader_features(gate, given)
            assert found.dtype == np.float64
            assert np.array_equal(found, np.log(p / (1.0 - p)), equal_nan=True)


def test_detector_threshold_is_strict() -> None:
    vector = np.zeros(384, dtype=np.float32)
    vector[0] = 0.5
    assert not detector(0.5).fires(vector)
    assert detector(0.49).fires(vector)


@pytest.mark.slow
def test_generator_puts_the_care_principle_first_on_a_fired_detector() -> None:
    """With a detector that always fires, a plain everyday prompt gets self-harm first and
    the care principle first (the plain encoder path: no prefilter)."""
    from vilmo.instruct.generator import VilmoGenerator
    from vilmo.instruct.principles import PrincipleBank
    from vilmo.instruct.stakes import StakesModel
    from vilmo.judge.embedder import Int8Embedder
    from vilmo.policy import load_policy
    from vilmo.policy_store import SHIPPED_POLICY_DIR

    always = DistressDetector(np.zeros(1 + len(VALUES)), 1.0, 0.0, np.zeros(384), 1.0, 0.0)
    step = VilmoGenerator(PrincipleBank.load(), Int8Embedder(), StakesModel.load(),
                          distress=always)
    policy = load_policy(SHIPPED_POLICY_DIR / "default.yaml")
    instruction = step.generate([{"role": "user", "content": "How do I bake bread?"}], policy)
    assert instruction.stakes[0] == "safety.self_harm"
    assert instruction.principle_ids[0] == DISTRESS_PRINCIPLE
    none = VilmoGenerator(PrincipleBank.load(), Int8Embedder(), StakesModel.load(),
                          distress=None)
    assert none.generate([{"role": "user", "content": "How do I bake bread?"}], policy).empty
    assert none.models_id != step.models_id  # a replica with another detector: other cache keys
