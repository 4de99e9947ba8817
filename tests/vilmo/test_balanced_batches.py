"""Issue 16: a lone check's rows are cut into batches that share the cores (the whole reading
after the prompt and alone no longer one batch for one core while the other idles), every row
read once, and the scores stay within the int8 graph's per-batch quantisation of the old ones.

The int8 graph quantises activations per batch, so a text's batches are made from the text
alone (``item_batches``): its scores are the same under load and beside any other texts."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import pytest
from conftest import NEEDS_WEIGHTS
from reply_cases import ASK_TEXT, BENIGN, EMBEDDED, VIOLENT

from vilmo.judge import pooling, value_onnx
from vilmo.judge.classifier import ScoreInput
from vilmo.judge.pooling import (
    balanced_batches,
    batch_cost,
    item_batches,
    length_batches,
    makespan,
)
from vilmo.judge.value_model import BuiltinClassifier
from vilmo.policy import load_policy
from vilmo.policy_store import SHIPPED_POLICY_DIR
from vilmo.types import Matrix
from vilmo.verdict import decide

LONE_CHECK = [52] * 5 + [143, 130]
"""bench_serving's 122-word reply after a short prompt: five sentence spans, the whole reply
after the prompt and alone."""


def widths(lengths: Sequence[int], batches: list[list[int]]) -> list[tuple[int, int]]:
    return [(len(b), max(lengths[r] for r in b)) for b in batches]


def predicted(lengths: Sequence[int], batches: list[list[int]], cores: int) -> float:
    return makespan([batch_cost(n, w) for n, w in widths(lengths, batches)], cores)


@pytest.mark.parametrize("lengths", [LONE_CHECK, [34, 34, 34, 41, 46, 46, 46, 46, 155, 172],
                                     [256] * 9 + [128] * 17 + [60] * 16, [100] * 40])
def test_every_row_is_in_one_batch_of_similar_lengths(lengths: list[int]) -> None:
    batches = balanced_batches(lengths, 32, 2)
    assert sorted(r for b in batches for r in b) == list(range(len(lengths)))
    # Cuts only split length batches: each batch is a run of one length batch.
    runs = {r: i for i, b in enumerate(length_batches(lengths, 32)) for r in b}
    assert all(len({runs[r] for r in b}) == 1 for b in batches)
    assert predicted(lengths, batches, 2) <= predicted(lengths, length_batches(lengths, 32), 2)


def test_a_lone_checks_whole_readings_go_to_both_cores() -> None:
    batches = balanced_batches(LONE_CHECK, 32, 2)
    whole, alone = 5, 6
    assert not any(whole in b and alone in b for b in batches)
    assert len(batches) >= 2


def test_one_core_keeps_the_length_batches() -> None:
    assert balanced_batches(LONE_CHECK, 32, 1) == length_batches(LONE_CHECK, 32)


def test_a_short_check_is_not_cut() -> None:
    """A few milliseconds of work: a cut would gain little and move its scores."""
    assert balanced_batches([24, 32], 32, 2) == length_batches([24, 32], 32)


def test_many_rows_keep_the_length_batches() -> None:
    """Full batches are enough to share the cores."""
    lengths = [100] * 65
    assert balanced_batches(lengths, 32, 2) == length_batches(lengths, 32)




@NEEDS_WEIGHTS
def test_shared_batches_keep_the_scores_within_quantisation(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The same windows, scored in cut batches and in length batches: the same verdicts, scores
    within 0.06 (int8 activations are quantised per batch; bench/bench_lone_check.py measures
    300 texts)."""
    policy = load_policy(SHIPPED_POLICY_DIR / "default.yaml")
    judge = BuiltinClassifier(cache_size=0)
    texts = [*EMBEDDED.values(), *BENIGN.values(), VIOLENT]
    cut = [judge.score([ScoreInput(t, ASK_TEXT)], list(policy.values))[0] for t in texts]
    monkeypatch.setattr(pooling, "ITEM_CORES", 1)
    whole = [judge.score([ScoreInput(t, ASK_TEXT)], list(policy.values))[0] for t in texts]
    for new, old in zip(cut, whole, strict=True):
        assert decide(new.violation, policy).action == decide(old.violation, policy).action
        assert new.violation == pytest.approx(old.violation, abs=0.06)


def test_item_batches_keep_each_texts_rows_apart() -> None:
    """A text's batches are the ones it gets alone: no batch holds two texts' rows."""
    lengths = [*LONE_CHECK, 24, 32, *[100] * 40, *LONE_CHECK]
    owner = [0] * 7 + [1] * 2 + [2] * 40 + [3] * 7
    batches = item_batches(lengths, owner, 32)
    assert sorted(r for b in batches for r in b) == list(range(len(lengths)))
    assert all(len({owner[r] for r in b}) == 1 for b in batches)
    for item in set(owner):
        rows = [r for r in range(len(owner)) if owner[r] == item]
        alone = item_batches([lengths[r] for r in rows], [0] * len(rows), 32)
        assert [b for b in batches if owner[b[0]] == item] == [[rows[r] for r in b]
                                                               for b in alone]


def test_a_texts_batches_do_not_depend_on_the_cores_idle_now(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Another check's batches running (``run_batches`` counts them) change nothing."""
    monkeypatch.setattr(value_onnx, "serving_cores", lambda: 2)
    idle = item_batches(LONE_CHECK, [0] * 7, 32)
    assert idle == balanced_batches(LONE_CHECK, 32, pooling.ITEM_CORES) != length_batches(
        LONE_CHECK, 32)
    with running_check():
        assert item_batches(LONE_CHECK, [0] * 7, 32) == idle


@contextmanager
def running_check() -> Iterator[None]:
    """Another check's batches running now, as ``run_batches`` counts them."""
    value_onnx._RUNNING.enter()
    try:
        yield
    finally:
        value_onnx._RUNNING.leave()


@NEEDS_WEIGHTS
@pytest.mark.parametrize("cores", [2, 4])
def test_scores_do_not_depend_on_the_load(monkeypatch: pytest.MonkeyPatch, cores: int) -> None:
    """The same reply, scored on an idle judge and beside another check: identical scores
    (its batches were cut for the idle cores: ``safety.privacy`` 0.503 alone, 0.447 under
    load, either side of the threshold)."""
    monkeypatch.setattr(value_onnx, "serving_cores", lambda: cores)
    judge = BuiltinClassifier(cache_size=0)
    item = ScoreInput(EMBEDDED["middle"], ASK_TEXT)
    idle = judge.readings([item])[0]
    with running_check():
        busy = judge.readings([item])[0]
    assert all(np.array_equal(a, b) for a, b in zip(idle, busy, strict=True))


@NEEDS_WEIGHTS
def test_scores_do_not_depend_on_the_other_texts_of_the_call() -> None:
    """A reply scored alone and among other replies of other lengths (as the micro-batcher
    scores several requests in one call): identical scores."""
    judge = BuiltinClassifier(cache_size=0)
    texts = [ScoreInput(t, ASK_TEXT) for t in [*EMBEDDED.values(), *BENIGN.values(), VIOLENT]]
    texts.append(ScoreInput(" ".join(BENIGN.values()) * 6))
    alone = [judge.readings([t])[0] for t in texts]
    together = judge.readings(texts[::-1])[::-1]
    for one, mixed in zip(alone, together, strict=True):
        assert all(np.array_equal(a, b) for a, b in zip(one, mixed, strict=True))


@NEEDS_WEIGHTS
def test_a_lone_checks_whole_readings_run_in_separate_batches(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The judge hands ``run_batches`` the cut batches: the reply after the prompt and the
    reply alone (the two longest rows) are no longer padded into one batch."""
    shapes: list[tuple[int, ...]] = []
    run = value_onnx.run_batches

    def recording(net: Callable[[np.ndarray, np.ndarray], Matrix],
                  batches: Sequence[value_onnx.Batch]) -> list[Matrix]:
        shapes.extend(ids.shape for ids, _ in batches)
        return run(net, batches)

    monkeypatch.setattr(value_onnx, "run_batches", recording)
    BuiltinClassifier(cache_size=0).score([ScoreInput(EMBEDDED["middle"], ASK_TEXT)],
                                          ["mft.care"])
    longest = sorted(shapes, key=lambda shape: shape[1])[-2:]
    assert [shape[0] for shape in longest] == [1, 1]
