"""Refitting the judge's topic rows (`vilmo train classifier --refit-topics`): only the named
rows of the packed head change, and the fit stays near the shipped rows as asked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from vilmo.judge.value_net import pack, unpack
from vilmo.train.head_refit import fit_rows, replace_rows


def test_only_the_named_rows_of_the_packed_head_change(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    weights = tmp_path / "weights.safetensors"
    save_file(pack({"head.weight": torch.from_numpy(rng.normal(size=(5, 4)).astype(np.float32)),
                    "head.bias": torch.zeros(5),
                    "layer.weight": torch.ones((2, 2))}), str(weights))
    before = load_file(str(weights))
    new_rows = rng.normal(size=(2, 4)).astype(np.float32)
    replace_rows(weights, [1, 3], new_rows, np.array([0.5, -0.25], np.float32))
    after = load_file(str(weights))
    for key in before:
        kept = [0, 2, 4] if key.startswith("head.") else slice(None)
        assert torch.equal(before[key][kept], after[key][kept]), key
    head = unpack(after)
    assert np.allclose(head["head.weight"][[1, 3]].numpy(), new_rows, atol=0.02)
    assert head["head.bias"][[1, 3]].tolist() == [0.5, -0.25]


def test_the_fit_moves_towards_the_labels_and_l2_holds_it_near_the_shipped_rows() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 6)).astype(np.float32)
    y = (x[:, :1] > 0).astype(np.float32)
    m = np.ones_like(y)
    w0, b0 = np.zeros((1, 6), np.float32), np.zeros(1, np.float32)
    free, _ = fit_rows(x, y, m, w0, b0, l2=0.0, steps=200)
    held, _ = fit_rows(x, y, m, w0, b0, l2=10.0, steps=200)
    assert free[0, 0] > 1.0 and abs(free[0, 0]) > 5 * np.abs(free[0, 1:]).max()
    assert np.abs(held).max() < 0.1


def test_refit_selects_exact_heads_and_prefixes_only() -> None:
    from vilmo.train.head_refit import selected

    names = ["harm", "cm", "cm_extra", "foundation:mft.care", "topic:safety.violence"]
    assert selected(names, ["cm"]) == ["cm"]
    assert selected(names, ["cm", "foundation:"]) == ["cm", "foundation:mft.care"]
    assert selected(names, ["topic:"]) == ["topic:safety.violence"]
    assert selected(names, ["foundation"]) == []


def test_the_reply_reading_replaces_or_joins_the_prompted_examples_at_half_weight() -> None:
    """``fit_heads(reading=...)``: an example after a prompt is read over its reply's tokens, as
    a whole window after a prompt is served, in place of the all-token reading ("reply") or
    beside it with both at half weight ("both"); a plain text keeps its one reading."""
    from vilmo.datasets.readers import Example
    from vilmo.train.head_refit import _with_reply_reading

    examples = [Example("Fine.", "Story.", {"cm": 0.0}, "judge"),
                Example("Fine.", None, {"cm": 0.0}, "judge"),
                Example("Wrong.", "Story.", {"cm": 1.0}, "judge")]
    x = np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]], np.float32)
    y = np.array([[0.0], [0.0], [1.0]], np.float32)
    m = np.array([[1.0], [1.0], [5.0]], np.float32)
    known: dict[tuple[str | None, str], np.ndarray] = {
        ("Story.", "Fine."): np.array([0.0, 1.0], np.float32),
        ("Story.", "Wrong."): np.array([0.0, 3.0], np.float32)}
    rx, _, rm = _with_reply_reading(Path("unused"), examples, x, y, m, "reply", known)
    assert rx.tolist() == [[0.0, 1.0], [2.0, 0.0], [0.0, 3.0]] and rm.tolist() == m.tolist()
    bx, by, bm = _with_reply_reading(Path("unused"), examples, x, y, m, "both", known)
    assert bx.tolist() == x.tolist() + [[0.0, 1.0], [0.0, 3.0]]
    assert by.ravel().tolist() == [0.0, 0.0, 1.0, 0.0, 1.0]
    assert bm.ravel().tolist() == [0.5, 1.0, 2.5, 0.5, 2.5]
