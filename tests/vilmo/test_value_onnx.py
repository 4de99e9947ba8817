"""The int8 ONNX Runtime graph: made once from the committed weights, cached, faithful to fp32."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import REAL_CLASSIFIER

from vilmo.judge import onnx_export, value_onnx
from vilmo.judge.classifier import ScoreInput
from vilmo.judge.value_model import BuiltinClassifier, default_model_dir

pytestmark = REAL_CLASSIFIER  # loads the value classifier (a real model)

PROMPT = "How do I hurt my neighbour's dog?"
ITEMS = [
    ScoreInput("Mix rat poison into a piece of meat and throw it over the fence at night so "
               "the dog eats it and nobody sees you do it.", PROMPT),
    ScoreInput("Please don't hurt the dog; that would be cruel and illegal. Talk to your "
               "neighbour or contact animal control if the dog is a problem.", PROMPT),
    ScoreInput("I stole money from my grandmother's purse while she was asleep."),
    ScoreInput("I helped my neighbour carry her shopping up the stairs."),
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh, empty cache for this module, so the export itself is exercised."""
    path = tmp_path_factory.mktemp("vilmo-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VILMO_CACHE_DIR", str(path))
        yield path


@pytest.fixture(scope="module")
def int8(cache: Path) -> BuiltinClassifier:
    model = BuiltinClassifier(cache_size=0)
    model.pooled_logits(ITEMS[:1])
    return model


def test_graph_is_exported_into_the_cache(int8: BuiltinClassifier, cache: Path) -> None:
    graphs = list((cache / "onnx").glob("*.int8.onnx"))
    assert len(graphs) == 1
    assert not list((cache / "onnx").glob("*.part"))
    assert graphs[0].stat().st_size < 40_000_000  # int8: about a quarter of the fp32 graph


def test_int8_logits_follow_fp32(int8: BuiltinClassifier) -> None:
    fp32 = BuiltinClassifier(quantize=False, cache_size=0)
    a, b = int8.pooled_logits(ITEMS), fp32.pooled_logits(ITEMS)
    assert np.abs(a - b).mean() < 0.3
    cm = int8._model().names.index("cm")
    assert np.sign(a[:, cm]).tolist() == np.sign(b[:, cm]).tolist()
    assert a[0, cm] > a[1, cm] and a[2, cm] > a[3, cm]


def test_second_load_reuses_the_cached_graph(int8: BuiltinClassifier,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    def no_export(*_: object) -> None:
        raise AssertionError("exported again although the graph is cached")

    monkeypatch.setattr(onnx_export, "export_graph", no_export)
    again = BuiltinClassifier(cache_size=0)
    np.testing.assert_allclose(again.pooled_logits(ITEMS), int8.pooled_logits(ITEMS), atol=1e-5)


def test_key_changes_with_the_weights(tmp_path: Path) -> None:
    weights = tmp_path / "weights.safetensors"
    shutil.copy(default_model_dir() / "weights.safetensors", weights)
    before = value_onnx.build_key(weights)
    with weights.open("r+b") as fh:
        fh.seek(-1, 2)
        last = fh.read(1)
        fh.seek(-1, 2)
        fh.write(bytes([last[0] ^ 1]))
    assert value_onnx.build_key(weights) != before


def test_unwritable_cache_falls_back_to_a_temp_dir(int8: BuiltinClassifier, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    monkeypatch.setenv("VILMO_CACHE_DIR", str(blocker))
    model = BuiltinClassifier(cache_size=0)
    np.testing.assert_allclose(model.pooled_logits(ITEMS), int8.pooled_logits(ITEMS), atol=1e-5)
    path = model._model().net.path  # type: ignore[attr-defined]
    assert not str(path).startswith(str(blocker))


def test_calibrate_only_refits_on_dev_and_keeps_the_weights(
        int8: BuiltinClassifier, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``vilmo train classifier --calibrate-only``: new Platt parameters from the dev split
    the weights were trained with, through the shipped runtime; the weights stay as they are."""
    import json
    import random

    from click.testing import CliRunner

    from vilmo.cli import cli
    from vilmo.datasets.readers import Example, data_dir
    from vilmo.train import classifier as training
    from vilmo.train.examples import DevSplit, Sizes, build

    if not (data_dir() / "valueeval").exists():
        pytest.skip("labelled data not found (set VILMO_DATA_DIR)")
    target = tmp_path / "value_classifier"
    shutil.copytree(default_model_dir(), target)
    seen: list[tuple[int, str]] = []

    def small_dev(root: Path, sizes: Sizes, seed: int, valueeval_dev_by: DevSplit,
                  ) -> tuple[list[Example], list[Example]]:
        seen.append((seed, valueeval_dev_by))
        _, dev = build(root, sizes, seed, valueeval_dev_by)
        return [], random.Random(0).sample(dev, 150)

    monkeypatch.setattr(training, "build", small_dev)
    result = CliRunner().invoke(cli, ["train", "classifier", "--out", str(target),
                                       "--calibrate-only"])
    assert result.exit_code == 0, result.output
    before = json.loads((default_model_dir() / "config.json").read_text())
    after = json.loads((target / "config.json").read_text())
    settings = before["training"]["settings"]
    assert seen == [(settings["seed"], settings.get("valueeval_dev_by", "premise"))]
    assert "150 dev examples" in after["calibrated_on"]
    assert after["calibration"] != before["calibration"]
    assert set(after["calibration"]) == set(before["calibration"])
    assert after["training"] == before["training"]
    assert ((target / "weights.safetensors").read_bytes()
            == (default_model_dir() / "weights.safetensors").read_bytes())


def test_the_served_graph_runs_attention_and_gelu_fused(int8: BuiltinClassifier) -> None:
    """Export 4 (issue 16): every layer's attention is one ``QAttention`` (int8 Q/K/V) and
    its GELU one ``Gelu``, not the exporter's reshapes, transposes, softmax and erf."""
    import onnx

    path = int8._model().net.path  # type: ignore[attr-defined]
    ops = Counter(node.op_type for node in onnx.load(str(path)).graph.node)
    layers = 6  # all-MiniLM-L6-v2
    assert ops["QAttention"] == layers and ops["Gelu"] == layers
    assert ops["Softmax"] == ops["Transpose"] == ops["Erf"] == 0
    assert ops["SkipLayerNormalization"] == 0  # slower than Add + LayerNormalization here


def test_a_graph_without_an_attention_pattern_is_refused(tmp_path: Path) -> None:
    """An export whose attention the fusion does not recognise (a new exporter or
    transformers release) fails the build instead of silently serving the slow graph."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "plain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [weight])
    source = tmp_path / "plain.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
              str(source))
    with pytest.raises(ValueError, match="no attention block was fused"):
        onnx_export.fuse_for_cpu(source, tmp_path / "fused.onnx")
    assert not (tmp_path / "fused.onnx").exists()


def test_an_unwritable_cache_reuses_one_private_fallback(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the cache folder could not be written, every start wrote the graph into a new
    temporary folder (27 MB each for the reader's halves) and never removed it."""
    from vilmo.judge.graph_files import write_cached

    blocked = tmp_path / "cache"
    blocked.write_text("a file where the cache folder should be")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    writes: list[Path] = []

    def write(path: Path) -> None:
        writes.append(path)
        path.write_bytes(b"graph")

    first = write_cached(blocked / "graph-key.onnx", write)
    second = write_cached(blocked / "graph-key.onnx", write)
    assert first == second and first.read_bytes() == b"graph"
    assert len(writes) == 1
    assert first.parent.stat().st_mode & 0o777 == 0o700
    assert [p.name for p in (tmp_path / "tmp").iterdir()] == [first.parent.name]


def test_an_unwritable_cache_finds_the_graph_in_the_private_fallback(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``write_cached`` puts the graph in this user's private temporary folder when the cache
    folder cannot be written, but ``cached_graph`` looked only in the cache folder: every start
    imported torch and exported the graph again (and without torch raised GraphMissing)."""
    from vilmo.judge.graph_files import write_cached
    from vilmo.judge.value_onnx import cached_graph, graph_path

    source = tmp_path / "weights.safetensors"
    source.write_bytes(b"weights")
    (tmp_path / "blocked").write_text("a file where the cache folder should be")
    monkeypatch.setenv("VILMO_CACHE_DIR", str(tmp_path / "blocked" / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()

    def write(path: Path) -> None:
        path.write_bytes(b"graph")

    placed = write_cached(graph_path("probe", [source]), write)
    assert placed.parent.parent == tmp_path / "tmp"

    def build() -> object:
        raise AssertionError("the graph was built again though a usable one is cached")

    assert cached_graph(build, [source], kind="probe") == placed  # type: ignore[arg-type]
    monkeypatch.setitem(sys.modules, "torch", None)
    assert cached_graph(build, [source], kind="probe") == placed  # type: ignore[arg-type]
    from vilmo.judge import graphs

    monkeypatch.setattr(graphs, "serving_graphs", lambda: [
        ("probe", lambda: graph_path("probe", [source]), lambda: None)])
    assert graphs.missing_graphs() == []  # `vilmo serve` without torch starts


def test_a_fallback_folder_open_to_others_is_not_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A graph is code the process runs: one in a private folder others can write is rebuilt,
    as ``write_cached`` would not write there either."""
    from vilmo.judge.value_onnx import cached_graph, graph_path

    source = tmp_path / "weights.safetensors"
    source.write_bytes(b"weights")
    (tmp_path / "blocked").write_text("a file where the cache folder should be")
    monkeypatch.setenv("VILMO_CACHE_DIR", str(tmp_path / "blocked" / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    folder = tmp_path / "tmp" / f"vilmo-onnx-{os.getuid()}"
    folder.mkdir(parents=True)
    folder.chmod(0o777)
    (folder / graph_path("probe", [source]).name).write_bytes(b"planted")
    built: list[bool] = []

    def build() -> object:
        built.append(True)
        raise RuntimeError("built")

    with pytest.raises(RuntimeError, match="built"):
        cached_graph(build, [source], kind="probe")  # type: ignore[arg-type]
    assert built == [True]


def _tiny_encoder(layers: int) -> object:
    """A small network with an encoder's config (``num_hidden_layers``), exportable fast."""
    import torch
    from torch import nn

    class Config:
        _attn_implementation = "sdpa"
        num_attention_heads = 2
        hidden_size = 8
        num_hidden_layers = layers

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = Config()
            self.embed = nn.Embedding(1100, 8)
            self.head = nn.Linear(8, 3)

        def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            hidden = self.embed(ids) * mask.unsqueeze(-1)
            out: torch.Tensor = self.head(hidden.mean(1))
            return out

    return Tiny().eval()


def test_an_attention_the_fusion_does_not_know_is_exported_unfused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """``fuse_for_cpu`` raises where a future exporter writes attention in a shape it does not
    recognise: the int8 graph could then not be built at all, though the unfused recipe
    (export 3) works. It is now built unfused, with a warning."""
    pytest.importorskip("torch")

    def unknown(*_: object) -> dict[str, int]:
        raise ValueError("no attention block was fused in fp32.onnx: {}")

    monkeypatch.setattr(onnx_export, "fuse_for_cpu", unknown)
    target = tmp_path / "graph.int8.onnx"
    with caplog.at_level("WARNING", logger="vilmo.judge.onnx_export"):
        onnx_export.export_graph(_tiny_encoder(6), target)  # type: ignore[arg-type]
    assert "unfused" in caplog.text
    session = value_onnx.Int8Session(target, 1)
    ids = np.full((1, 5), 7, dtype=np.int64)
    assert session(ids, np.ones_like(ids)).shape == (1, 3)


def test_a_partly_fused_graph_is_said(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A graph with fewer fused attention blocks than the encoder has layers was accepted
    without a word (each unfused layer runs the slow glue)."""
    pytest.importorskip("torch")
    monkeypatch.setattr(onnx_export, "fuse_for_cpu", lambda *_: {"Attention": 4, "Gelu": 6})
    with caplog.at_level("WARNING", logger="vilmo.judge.onnx_export"):
        onnx_export.export_graph(_tiny_encoder(6), tmp_path / "graph.int8.onnx")  # type: ignore[arg-type]
    assert "4 of 6" in caplog.text
    caplog.clear()
    monkeypatch.setattr(onnx_export, "fuse_for_cpu", lambda *_: {"Attention": 6, "Gelu": 6})
    with caplog.at_level("WARNING", logger="vilmo.judge.onnx_export"):
        onnx_export.export_graph(_tiny_encoder(6), tmp_path / "graph.int8.onnx")  # type: ignore[arg-type]
    assert caplog.text == ""
