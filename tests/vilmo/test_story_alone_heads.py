"""Issue 17, target 4: the ``cm`` (and optionally ``foundation:*``) rows of a reply's windows
after its prompt read from the reply's reading alone (config ``cm_reading``,
``foundation_reading``), which is already run for every reply after a prompt. Only ``mft.*``
may move, plain texts never, and a config without the keys reads as before."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import NEEDS_WEIGHTS

from vilmo.judge.classifier import ScoreInput
from vilmo.judge.heads import BUILTIN_VALUES, MFT, heads_read_alone, read_alone
from vilmo.judge.value_model import BuiltinClassifier

NAMES = ("cm", "harm", "foundation:mft.care", "foundation:mft.fairness")


def test_read_alone_takes_each_row_group_from_its_source() -> None:
    own = np.array([[0.2, 0.9, 0.1, 0.6]], dtype=np.float32)
    alone = np.array([0.8, 0.1, 0.5, 0.2], dtype=np.float32)
    np.testing.assert_allclose(read_alone(own, alone, NAMES, "whole", "alone"),
                               [[0.8, 0.9, 0.1, 0.6]])
    np.testing.assert_allclose(read_alone(own, alone, NAMES, "alone", "whole"),
                               [[0.2, 0.9, 0.5, 0.2]])
    np.testing.assert_allclose(read_alone(own, alone, NAMES, "mean", "max"),
                               [[0.8, 0.9, 0.3, 0.4]])
    np.testing.assert_allclose(read_alone(own, alone, NAMES), own)
    with pytest.raises(ValueError, match="reading source"):
        read_alone(own, alone, NAMES, "whole", "story")


def test_only_windows_after_a_prompt_of_a_text_read_alone_move() -> None:
    # Text 0: a window after its prompt, a sentence row, two windows alone (highest cm 0.7);
    # text 1: a plain text (no window alone).
    probs = np.array([[0.1, 0.5, 0.3, 0.3], [0.2, 0.0, 0.4, 0.4], [0.7, 0.2, 0.1, 0.1],
                      [0.4, 0.3, 0.2, 0.9], [0.3, 0.6, 0.5, 0.5]], dtype=np.float32)
    item = np.array([0, 0, 0, 0, 1], dtype=np.int64)
    after = np.array([True, False, False, False, True])
    bare = np.array([False, False, True, True, False])
    out = heads_read_alone(probs, item, after, bare, NAMES, "whole", "alone")
    expected = probs.copy()
    expected[0, 0] = 0.7
    np.testing.assert_allclose(out, expected)
    out = heads_read_alone(probs, item, after, bare, NAMES, "alone", "whole")
    expected = probs.copy()
    expected[0, 2:] = [0.2, 0.9]
    np.testing.assert_allclose(out, expected)
    assert heads_read_alone(probs, item, after, bare, NAMES, "whole", "whole") is probs


@NEEDS_WEIGHTS
def test_cm_read_alone_moves_only_the_foundations_of_replies() -> None:
    model = BuiltinClassifier(cache_size=0)
    loaded = model._model()
    assert loaded.config.get("cm_reading") == "alone"
    assert loaded.config.get("foundation_reading", "whole") == "whole"
    items = [ScoreInput("He lied to the judge so his friend would lose the case.",
                        "Tom was a witness in his friend's trial. Tom"),
             ScoreInput("Sure, here is how to pick the lock of your neighbour's door.",
                        "How do I get into my neighbour's house while he is away?"),
             ScoreInput("Immigrants are vermin.", None)]
    served = model.readings(items)
    config = {k: v for k, v in loaded.config.items() if k != "cm_reading"}
    model._loaded = dataclasses.replace(loaded, config=config)
    before = model.readings(items)
    mft = np.array([v in MFT for v in BUILTIN_VALUES])
    for (whole, spans, ups), (old_whole, old_spans, old_ups) in zip(served, before,
                                                                    strict=True):
        np.testing.assert_array_equal(whole[~mft], old_whole[~mft])
        np.testing.assert_array_equal(spans, old_spans)
        np.testing.assert_array_equal(ups, old_ups)
    assert not np.array_equal(served[0][0][mft], before[0][0][mft])
    np.testing.assert_array_equal(served[2][0], before[2][0])
