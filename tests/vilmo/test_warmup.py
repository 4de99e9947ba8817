"""Issue 16: the gateway serves from cached ONNX graphs without torch; where a graph is missing
and torch cannot build it, the error says to run `vilmo warmup`."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import NEEDS_WEIGHTS

from vilmo.judge.embedder import OnnxEmbedder
from vilmo.judge.value_model import BuiltinClassifier
from vilmo.judge.value_onnx import GraphMissing

pytestmark = NEEDS_WEIGHTS


@pytest.fixture
def no_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache, and ``import torch`` failing as where torch is not installed."""
    monkeypatch.setenv("VILMO_CACHE_DIR", str(tmp_path))
    monkeypatch.setitem(sys.modules, "torch", None)
    return tmp_path


@pytest.mark.parametrize("load", [
    lambda: BuiltinClassifier(cache_size=0).warm_up(),
    lambda: OnnxEmbedder(cache_size=0).warm_up(),
    lambda: OnnxEmbedder(cache_size=0, quantized=False).warm_up()],
    ids=["judge", "prompt-encoder", "zero-shot-encoder"])
def test_a_missing_graph_without_torch_names_vilmo_warmup(no_torch: Path, load: object) -> None:
    with pytest.raises(GraphMissing, match="vilmo warmup"):
        load()  # type: ignore[operator]
    assert not list(no_torch.rglob("*.onnx"))
