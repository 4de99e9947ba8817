"""Issue 17, "the prompt dominates the mean pool": a reply's whole windows after its prompt
pooled over the reply's own tokens (``window.whole_pooling`` "reply"), with plain texts, the
Platt fit and the instruction generator's second look reading exactly as before."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import NEEDS_WEIGHTS

from vilmo.judge.classifier import ScoreInput
from vilmo.judge.heads import BUILTIN_VALUES
from vilmo.judge.value_model import FINE, WHOLE, BuiltinClassifier
from vilmo.judge.window_rows import reply_pooled
from vilmo.judge.windowing import WindowSpec, pad_numpy

PROMPT = "How do I get back at my neighbour for insulting me?"
REPLY = ("Please don't: hurting him would only make things worse. Talk to him calmly, or ask a "
         "mediator for help.")


def _pooling(model: BuiltinClassifier, pooling: str, weight: float = 1.0) -> BuiltinClassifier:
    """``model`` pooling its whole windows as ``pooling``, whatever its config says."""
    loaded = model._model()
    model._loaded = dataclasses.replace(loaded, spec=dataclasses.replace(
        loaded.spec, whole_pooling=pooling, reply_weight=weight))
    return model


def test_reply_pooled_reads_the_reply_tokens_of_prompted_rows_only() -> None:
    logits = np.array([[1.0, 1.0], [2.0, 2.0]], dtype=np.float32)
    tokens = {0: np.arange(12, dtype=np.float32).reshape(6, 2),
              1: np.zeros((4, 2), dtype=np.float32)}
    rows = [[101, 7, 102, 8, 9, 102], [101, 8, 9, 102]]
    # Row 0: head [CLS] 7 [SEP] (3 tokens), reply tokens at 3, 4; row 1 is not after a prompt.
    out = reply_pooled(logits, tokens, rows, {0: 3}, 1.0)
    np.testing.assert_allclose(out[0], [7.0, 8.0])
    np.testing.assert_allclose(out[1], logits[1])
    np.testing.assert_allclose(reply_pooled(logits, tokens, rows, {0: 3}, 0.25)[0],
                               [0.25 * 7 + 0.75, 0.25 * 8 + 0.75])
    np.testing.assert_allclose(reply_pooled(logits, tokens, rows, {0: 3}, 0.0), logits)
    # A window with no reply token keeps its all-token reading.
    np.testing.assert_allclose(reply_pooled(logits, tokens, [[101, 7, 102, 102]] * 2,
                                            {0: 3}, 1.0), logits)


def test_the_setting_is_checked() -> None:
    with pytest.raises(ValueError, match="whole_pooling"):
        WindowSpec(whole_pooling="prompt")
    with pytest.raises(ValueError, match="reply_weight"):
        WindowSpec(reply_weight=1.5)
    assert WindowSpec().whole_pooling == "all"


@NEEDS_WEIGHTS
def test_reply_pooling_is_the_head_on_the_reply_tokens_mean_state() -> None:
    """"reply" reads each whole window after the prompt from its reply tokens' logits (the head
    is linear: the head on their mean state), and nothing else."""
    model = _pooling(BuiltinClassifier(cache_size=0), "reply")
    item = ScoreInput(REPLY, PROMPT)
    read = model._rows([item], sentences=False, alone=False)
    assert set(read.prompted) == {r for r, k in enumerate(read.kind) if k in (WHOLE, FINE)}
    reply_logits, _, _ = model._window_logits([item], sentences=False, alone=False)
    ids, mask = pad_numpy(read.rows)
    tokens = model._model().net.outputs(ids, mask)[1]
    head = read.prompted[0]
    expected = tokens[0, head:len(read.rows[0]) - 1].mean(axis=0)
    np.testing.assert_allclose(reply_logits[0], expected, atol=1e-5)
    all_logits, _, _ = model._window_logits([item], sentences=False, alone=False, reply=False)
    assert np.abs(reply_logits - all_logits).max() > 0.01


@NEEDS_WEIGHTS
def test_plain_texts_and_the_platt_fit_read_as_before() -> None:
    """A plain text (an input check, the second look's prompt) has no prompt/reply split: it
    reads bit for bit as with "all", calibrated or not; and the Platt scaling stays fitted on
    the all-token reading (``pooled_logits``), so the second look's uncalibrated reading of a
    prompt does not move."""
    plain = [ScoreInput("I will find you and break every bone."), ScoreInput(REPLY)]
    prompted = [ScoreInput(REPLY, PROMPT)]
    base = _pooling(BuiltinClassifier(cache_size=0), "all")
    reply = _pooling(BuiltinClassifier(cache_size=0), "reply")
    for calibrated in (True, False):
        before = base.score(plain, BUILTIN_VALUES, calibrated=calibrated)
        after = reply.score(plain, BUILTIN_VALUES, calibrated=calibrated)
        for b, a in zip(before, after, strict=True):
            assert a.violation == b.violation and a.upholds == b.upholds
    np.testing.assert_array_equal(reply.pooled_logits(plain + prompted),
                                  base.pooled_logits(plain + prompted))
    assert (reply.score(prompted, BUILTIN_VALUES)[0].violation
            != base.score(prompted, BUILTIN_VALUES)[0].violation)


@NEEDS_WEIGHTS
@pytest.mark.slow
def test_reply_pooling_on_the_fp32_network_is_the_head_of_the_reply_mean_state() -> None:
    """The contract "reply" rests on, on the fp32 network: a whole window's logits are the head
    applied to the mean of its reply tokens' last hidden states."""
    import torch

    model = _pooling(BuiltinClassifier(quantize=False, cache_size=0), "reply")
    item = ScoreInput(REPLY, PROMPT)
    read = model._rows([item], sentences=False, alone=False)
    logits, _, _ = model._window_logits([item], sentences=False, alone=False)
    net = model._model().net.net.net  # type: ignore[attr-defined]
    ids, mask = (torch.from_numpy(a) for a in pad_numpy(read.rows))
    with torch.inference_mode():
        hidden = net.top(net.lower(ids, mask), mask)
        expected = net.head(hidden[0, read.prompted[0]:len(read.rows[0]) - 1].mean(0)).numpy()
    np.testing.assert_allclose(logits[0], expected, atol=1e-4)
