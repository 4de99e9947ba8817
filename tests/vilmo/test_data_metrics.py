"""Data readers' label parsing and splits, and the statistics behind the model card."""

from __future__ import annotations

import numpy as np
import pytest

from vilmo import data, metrics


@pytest.mark.parametrize(("raw", "want"), [
    ("benevolence: -1", ("benevolence", -1)), ("universalism: +1", ("universalism", 1)),
    ("security: 1", ("security", 1)), ("power: =1", ("power", 1)),
    ("conformity: 1+", ("conformity", 1)), ("self-direction:-1", ("self-direction", -1)),
    ("garbage", None)])
def test_value_labels_are_normalised(raw: str, want: tuple[str, int] | None) -> None:
    assert data.parse_value_label(raw) == want


def test_dialogue_split() -> None:
    assert data.split_dialogue("Human: Why?\nBob: Because.") == ("Why?", "Because.")
    hh = "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Help me\n\nAssistant: Sure, here."
    assert data.split_dialogue(hh) == ("Help me", "Sure, here.")


def test_splits_are_stable_and_disjoint() -> None:
    texts = [f"text {i}" for i in range(2000)]
    parts = [data.split_of(t, 25, 10) for t in texts]
    assert parts == [data.split_of(t, 25, 10) for t in texts]
    share = parts.count("heldout") / len(parts)
    assert 0.2 < share < 0.3


def test_auc_and_intervals() -> None:
    assert metrics.roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert np.isnan(metrics.roc_auc([0.1, 0.2], [1, 1]))
    low, high = metrics.wilson(50, 100)
    assert low < 0.5 < high and high - low == pytest.approx(0.19, abs=0.01)


def test_platt_calibrates() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 4000)
    logits = 3.0 * (y - 0.5) + rng.normal(0, 1, 4000) + 2.0  # shifted: uncalibrated
    a, b = metrics.fit_platt(logits, y)
    p = metrics.sigmoid(a * logits + b)
    assert abs(p.mean() - y.mean()) < 0.02


def test_shrunk_thresholds_sit_between_own_and_shared() -> None:
    rng = np.random.default_rng(0)
    y = rng.random((400, 2)) < 0.3
    # Column 0 separates at 0.7, column 1 at 0.2: their own best thresholds differ.
    p = np.where(y, [0.75, 0.25], [0.65, 0.15]) + rng.normal(0, 0.01, (400, 2))
    own = [metrics.best_f1_threshold(p[:, j], y[:, j]) for j in range(2)]
    shrunk = metrics.shrunk_f1_thresholds(p, y)
    assert own[0] > 0.6 and own[1] < 0.3
    # One shared threshold does best at column 1's (it gets one column perfect and the other
    # half right), so column 1 keeps its own and column 0 moves halfway towards it.
    assert shrunk[1] == pytest.approx(own[1], abs=1e-3)
    assert shrunk[0] == pytest.approx((own[0] + own[1]) / 2, abs=1e-3)


def test_data_sets_when_present() -> None:
    root = data.data_dir()
    if not (root / "fulcra").exists():
        pytest.skip(f"data folder {root} absent (set VILMO_DATA_DIR)")
    held = data.fulcra(root, "heldout")
    train = data.fulcra(root, "train")
    assert held and train
    assert not {r.response for r in held} & {r.response for r in train if r.prompt} - {""}
    assert len(data.valueeval(root, "validation")) == 1896
    cm_held = data.commonsense(root, "test", "heldout")
    cm_train = data.commonsense(root, "test", "train")
    assert len(cm_held) + len(cm_train) + len(data.commonsense(root, "test", "dev")) \
        == len(data.commonsense(root, "test"))


def test_valueeval_dev_conclusions_are_unseen_in_training() -> None:
    """The validation file's conclusions are all unseen in training, so dev is drawn by
    conclusion too; the premise rule of older weights stays reproducible."""
    from vilmo.train.examples import valueeval_examples

    root = data.data_dir()
    if not (root / "valueeval").exists():
        pytest.skip(f"data folder {root} absent (set VILMO_DATA_DIR)")
    conclusion = {a.prompt: a.conclusion for a in data.valueeval(root, "training")}

    def conclusions(examples: list[data.Example]) -> set[str]:
        assert all(e.prompt is not None for e in examples)
        return {conclusion[str(e.prompt)] for e in examples}

    train = conclusions(valueeval_examples(root, "train"))
    dev = conclusions(valueeval_examples(root, "dev"))
    assert dev and train and not dev & train
    assert not train & {a.conclusion for a in data.valueeval(root, "validation")}
    old_dev = conclusions(valueeval_examples(root, "dev", "premise"))
    assert old_dev & conclusions(valueeval_examples(root, "train", "premise"))
