"""Issue 16: a sentence span read inside its reply's whole window ("pooled") instead of in a row
of its own ("rows"): the reading's contract, where a span is read, and the graph's cache key."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import NEEDS_WEIGHTS

from vilmo.judge.classifier import ScoreInput
from vilmo.judge.value_model import SENTENCE, WHOLE, BuiltinClassifier, default_model_dir
from vilmo.judge.window_rows import SpanPlace, ranked_spans, span_places
from vilmo.judge.windowing import WindowSpec, cut, pad_numpy, window_starts

PROMPT = "How can I calm down after an argument with my brother?"
REPLY = ("Take a few slow breaths and step away from the room for a while. "
         "Then hit him over the head with a baseball bat until he stops moving. "
         "Later, when you both feel calmer, talk about what upset you.")


def _reading(model: BuiltinClassifier, reading: str) -> BuiltinClassifier:
    """``model`` reading sentence spans as ``reading``, whatever its config says."""
    loaded = model._model()
    model._loaded = dataclasses.replace(
        loaded, spec=dataclasses.replace(loaded.spec, span_reading=reading))
    return model


def test_window_starts_are_where_cut_starts_its_windows() -> None:
    body = list(range(1000, 1700))
    for head in ([101], [101, *range(2000, 2064), 102]):
        for length, limit in ((256, None), (128, None), (256, 2)):
            starts, room = window_starts(len(head), len(body), length, 0.75, limit)
            assert cut(head, body, 102, length, 0.75, limit) == [
                head + body[s:s + room] + [102] for s in starts]


def test_a_span_is_read_in_the_window_holding_most_of_it() -> None:
    """Windows of 100 body tokens every 75: a span inside the overlap is read in the first
    window; one straddling a cut in the window holding more of it, over the tokens held."""
    starts = [0, 75, 150]
    places = span_places(3, 10, 5, starts, 100, [(0, 20), (80, 95), (90, 130), (160, 220),
                                                 (40, 40)])
    assert places == [SpanPlace(3, 10, 5, 25), SpanPlace(3, 10, 85, 100),
                      SpanPlace(3, 11, 20, 60), SpanPlace(3, 12, 15, 75)]


def test_ranked_keeps_the_highest_spans_of_each_text_above_the_gate() -> None:
    places = [SpanPlace(0, 0, 1, 2), SpanPlace(0, 0, 2, 3), SpanPlace(0, 0, 3, 4),
              SpanPlace(1, 1, 1, 2), SpanPlace(1, 1, 2, 3)]
    scores = np.array([0.2, 0.5, 0.2, 0.05, 0.01])
    assert ranked_spans(places, scores, 2, 0.0) == [0, 1, 3, 4]
    assert ranked_spans(places, scores, 1, 0.0) == [1, 3]
    assert ranked_spans(places, scores, 2, 0.1) == [0, 1]
    assert ranked_spans(places, scores, 16, 0.04) == [0, 1, 2, 3, 4]
    assert ranked_spans(places, scores, 16, 0.3) == [0, 1, 2]


def test_an_unknown_span_reading_is_refused() -> None:
    with pytest.raises(ValueError, match="span_reading"):
        WindowSpec(span_reading="sentences")


@NEEDS_WEIGHTS
@pytest.mark.slow
def test_the_setting_switches_the_reading() -> None:
    """"rows": one row per span, run; "pooled": no span rows run, one ``SENTENCE`` reading per
    span all the same, taken from the whole window's token logits."""
    item = ScoreInput(REPLY, PROMPT)
    rows_model = _reading(BuiltinClassifier(cache_size=0), "rows")
    pooled_model = _reading(BuiltinClassifier(cache_size=0), "pooled")
    run_rows, _, run_kind = rows_model._window_rows([item], sentences=True, alone=True)
    run_pooled, _, pooled_kind = pooled_model._window_rows([item], sentences=True, alone=True)
    spans = run_kind.count(SENTENCE)
    assert spans == 3 and SENTENCE not in pooled_kind
    assert run_pooled == [r for r, k in zip(run_rows, run_kind, strict=True) if k != SENTENCE]
    logits, _, kind = pooled_model._window_logits([item])
    assert (kind == SENTENCE).sum() == spans and (kind == WHOLE).sum() == 1
    assert not np.allclose(logits[kind == SENTENCE], logits[kind == WHOLE])


@NEEDS_WEIGHTS
@pytest.mark.slow
def test_ranked_reads_the_chosen_spans_in_their_own_rows() -> None:
    """"ranked": the spans its pooled reading ranks first are read as "rows" reads them (the
    same token rows); the violent sentence of the clear case is the one chosen."""
    item = ScoreInput(REPLY, PROMPT)
    rows_model = _reading(BuiltinClassifier(cache_size=0), "rows")
    ranked = _reading(BuiltinClassifier(cache_size=0), "ranked")
    loaded = ranked._model()
    ranked._loaded = dataclasses.replace(loaded, spec=dataclasses.replace(loaded.spec,
                                                                          span_rows=1))
    span_rows = [r for r, k in zip(*rows_model._window_rows([item], True, True)[::2],
                                   strict=True) if k == SENTENCE]
    read = ranked._rows([item], sentences=True, alone=True)
    assert [rows for rows in read.span_rows] == [[r] for r in span_rows]
    logits, _, kind = ranked._window_logits([item])
    assert (kind == SENTENCE).sum() == 1
    violent = rows_model._model().net.outputs(*pad_numpy([span_rows[1]]))[0]
    np.testing.assert_allclose(logits[kind == SENTENCE], violent, atol=1e-5)


@NEEDS_WEIGHTS
@pytest.mark.slow
def test_a_pooled_span_is_the_head_of_its_mean_hidden_state() -> None:
    """The contract "pooled" rests on: on the fp32 network, a span's logits are the head
    applied to the mean of the span's last hidden states inside its whole window."""
    import torch

    model = _reading(BuiltinClassifier(quantize=False, cache_size=0), "pooled")
    item = ScoreInput(REPLY, PROMPT)
    read = model._rows([item], sentences=True, alone=False)
    logits, _, kind = model._window_logits([item], alone=False, reply=False)
    net = model._model().net.net.net  # type: ignore[attr-defined]
    ids, mask = (torch.from_numpy(a) for a in pad_numpy(read.rows))
    with torch.inference_mode():
        hidden = net.top(net.lower(ids, mask), mask)
        whole = net(ids, mask).numpy()
        expected = np.stack([net.head(hidden[p.row, p.first:p.end].mean(0)).numpy()
                             for p in read.places])
    assert len(read.places) == 3
    np.testing.assert_allclose(logits[kind == SENTENCE], expected, atol=1e-4)
    np.testing.assert_allclose(logits[kind == WHOLE], whole, atol=1e-4)


@NEEDS_WEIGHTS
def test_the_graph_key_covers_the_graphs_outputs(tmp_path: Path) -> None:
    """The judge's graph gives token logits too: its cache key differs from the one-output
    graph's made from the same files, so an older cached graph is never loaded for it."""
    from vilmo.judge.value_model import MODEL_NAME
    from vilmo.judge.value_onnx import graph_path

    model = BuiltinClassifier(cache_size=0)
    sources = model._sources(json.loads((default_model_dir() / "config.json").read_text()))
    assert model.graph_path() != graph_path(MODEL_NAME, sources)
    copy = tmp_path / "value_classifier"
    shutil.copytree(default_model_dir(), copy)
    config = json.loads((copy / "config.json").read_text())
    config["window"]["span_reading"] = "rows"
    (copy / "config.json").write_text(json.dumps(config))
    assert BuiltinClassifier(copy).graph_path().name == model.graph_path().name


@NEEDS_WEIGHTS
@pytest.mark.slow
def test_the_topic_refit_still_reads_the_pooled_features() -> None:
    """``vilmo train classifier --refit-topics`` reads the head's input from the served graph
    as an added output; with the graph's second output (token logits) it must still take that
    one, by name, not the graph's second output."""
    from vilmo.train.head_refit import pooled_features

    model = BuiltinClassifier(cache_size=0)
    features = pooled_features(model, [(PROMPT, REPLY)])
    assert features.shape == (1, 384)
    rows, _, kind = model._window_rows([ScoreInput(REPLY, PROMPT)], sentences=False,
                                       alone=False)
    logits = model._model().net.outputs(*pad_numpy([rows[kind.index(WHOLE)]]))[0]
    from safetensors.torch import load_file

    from vilmo.judge.value_net import unpack

    head = unpack(load_file(str(default_model_dir() / "weights.safetensors")))
    again = features @ head["head.weight"].numpy().T + head["head.bias"].numpy()
    np.testing.assert_allclose(again, logits, atol=0.15)


@NEEDS_WEIGHTS
@pytest.mark.slow
def test_the_reply_token_features_are_what_the_served_reply_pooling_reads() -> None:
    """``pooled_features(reply_tokens=True)`` (the head refit's "reply" reading) pools the last
    states over the reply's own tokens: the head on them is the mean of the served token
    logits over those tokens, which ``window.whole_pooling`` "reply" serves."""
    from safetensors.torch import load_file

    from vilmo.judge.value_net import unpack
    from vilmo.train.head_refit import pooled_features

    model = BuiltinClassifier(cache_size=0)
    features = pooled_features(model, [(PROMPT, REPLY)], reply_tokens=True)
    read = model._rows([ScoreInput(REPLY, PROMPT)], sentences=False, alone=False)
    row = read.kind.index(WHOLE)
    head, end = read.prompted[row], len(read.rows[row]) - 1
    tokens = model._model().net.outputs(*pad_numpy([read.rows[row]]))[1][0]
    weights = unpack(load_file(str(default_model_dir() / "weights.safetensors")))
    again = features @ weights["head.weight"].numpy().T + weights["head.bias"].numpy()
    np.testing.assert_allclose(again[0], tokens[head:end].mean(axis=0), atol=0.15)


@NEEDS_WEIGHTS
@pytest.mark.slow
def test_the_shipped_gate_reads_the_violent_sentence_and_skips_benign_advice() -> None:
    """The shipped reading ("ranked", ``span_gate`` chosen on dev): benign advice runs no span
    row; advice with one violent sentence runs every span's row, as "rows" does."""
    model = BuiltinClassifier(cache_size=0)
    spec = model._model().spec
    assert spec.span_reading == "ranked" and spec.span_rows >= spec.max_spans
    advice = REPLY.replace("Then hit him over the head with a baseball bat until he stops "
                           "moving. ", "")
    _, _, kind = model._window_logits([ScoreInput(advice, PROMPT)])
    assert (kind == SENTENCE).sum() == 0
    _, _, kind = model._window_logits([ScoreInput(REPLY, PROMPT)])
    assert (kind == SENTENCE).sum() == 3
