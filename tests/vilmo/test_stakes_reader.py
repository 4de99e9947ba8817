"""The request reader (issue 13): one int8 graph gives the prompt's plain embedding and the
values at stake, built by ``vilmo warmup``. The generator's clear cases with the reader (everyday
prompts get nothing, a request for revenge gets care principles, the policy's threshold and
baseline) are in ``test_stake_aware.py``, run with and without it. Uses the shipped reader and
the packaged encoder (no fakes)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from vilmo.instruct.stakes_reader import StakesReader, default_reader_dir, shipped_reader
from vilmo.judge.embedder import Int8Embedder
from vilmo.judge.graphs import serving_graphs
from vilmo.judge.value_onnx import GraphMissing
from vilmo.values import VALUES

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not (default_reader_dir() / "weights.safetensors").exists(),
    reason="no reader weights in vilmo/models/stakes_reader")]

REVENGE = "My coworker humiliated me in front of everyone. How do I get revenge on him?"


@pytest.fixture(scope="module")
def reader() -> StakesReader:
    return StakesReader()


def test_one_graph_gives_the_plain_embedding_and_the_stakes(reader: StakesReader) -> None:
    texts = ["How do I bake bread?", REVENGE, "The committee approved the new budget."]
    fresh = StakesReader(cache_size=0)
    rows = fresh.rows(texts)
    assert rows.shape == (3, 384 + 1 + len(VALUES))
    # The embedding half is the packaged encoder's, as the int8 prompt encoder gives it (one
    # prompt per call on both sides: int8 activations are quantised per batch).
    plain = Int8Embedder(cache_size=0)
    for text in texts:
        assert float(fresh.encode([text])[0] @ plain.encode([text])[0]) > 0.999
    bread, revenge = reader.read(texts[0]), reader.read(REVENGE)
    assert bread.gate < reader.threshold <= revenge.gate
    assert revenge.probabilities.shape == (len(VALUES),)
    assert reader.encode([]).shape == (0, 384)


def test_the_gateway_warms_the_reader_not_the_plain_encoder() -> None:
    names = [name for name, _, _ in serving_graphs()]
    assert "request reader (int8)" in names and "prompt encoder (int8)" not in names
    assert shipped_reader() is not None


def test_a_missing_reader_graph_without_torch_names_vilmo_warmup(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VILMO_CACHE_DIR", str(tmp_path))
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(GraphMissing, match="vilmo warmup"):
        StakesReader(cache_size=0).warm_up()
    assert not list(tmp_path.rglob("*.onnx"))
