"""The classifier's training loop on the real packaged encoder: it fits a tiny set, it changes
only the layers above the frozen ones and the head (what the committed file holds), and what it
writes loads as the classifier."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from vilmo.classifier import ScoreInput
from vilmo.data import Example
from vilmo.embedder import packaged_model_path
from vilmo.train.classifier import TrainSettings, fit_network, write_network
from vilmo.value_model import BuiltinClassifier
from vilmo.value_net import ValueNet, WindowSpec, load_base, pad

pytestmark = pytest.mark.slow  # loads the packaged encoder (a real model)

WRONG = ("I pushed the old man into the river.", "I stole my sister's savings.",
         "I lied to the court to send an innocent man to prison.", "I kicked the stray dog.")
FINE = ("I helped the old man across the river.", "I added to my sister's savings.",
        "I told the court the truth about what I saw.", "I fed the stray dog.")


@pytest.mark.parametrize("bf16", [False, True])
def test_fit_trains_the_top_layers_and_head_only(bf16: bool) -> None:
    bert, tokenizer = load_base(packaged_model_path())
    net = ValueNet(bert, 2, n_frozen=5)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    train = ([Example(t, None, {"cm": 1.0}, "t") for t in WRONG]
             + [Example(t, None, {"cm": 0.0}, "t") for t in FINE]) * 4
    settings = TrainSettings(epochs=8, batch_size=8, lr_layers=5e-4, lr_head=1e-2, bf16=bf16)
    losses = fit_network(net, tokenizer, train, ("cm", "harm"), settings, random.Random(0),
                         progress=False)

    assert sum(losses[-4:]) < 0.5 * sum(losses[:4])
    changed = {k for k, v in net.state_dict().items() if not torch.equal(v, before[k])}
    assert any(k.startswith("bert.encoder.layer.5.") for k in changed)
    assert "head.weight" in changed
    assert all(k.startswith(("bert.encoder.layer.5.", "head.")) for k in changed)
    with torch.inference_mode():
        ids, mask = pad([tokenizer.encode(t) for t in WRONG + FINE])
        cm = net(ids, mask)[:, 0]
    assert (cm[:4] > cm[4:]).all()


def test_written_network_loads_as_the_classifier(tmp_path: Path) -> None:
    """What ``write_network`` writes is what ``BuiltinClassifier`` reads: same logits, up to
    the int8 packing of the weight rows."""
    bert, tokenizer = load_base(packaged_model_path())
    net = ValueNet(bert, 2, n_frozen=5)
    train = [Example(t, None, {"cm": 1.0}, "t") for t in WRONG]
    fit_network(net, tokenizer, train + [Example(t, None, {"cm": 0.0}, "t") for t in FINE],
                ("cm", "harm"), TrainSettings(epochs=2, batch_size=8), random.Random(0),
                progress=False)
    write_network(tmp_path, net, ("cm", "harm"), WindowSpec())
    loaded = BuiltinClassifier(tmp_path, quantize=False, cache_size=0)
    with torch.inference_mode():
        ids, mask = pad([tokenizer.encode(t) for t in WRONG + FINE])
        direct = net(ids, mask).numpy()
    read = loaded.pooled_logits([ScoreInput(t) for t in WRONG + FINE])
    assert np.abs(read - direct).max() < 0.05


def test_encoder_is_a_setting_the_classifier_serves_from(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Weights trained on another encoder folder name it in their config, and the classifier
    loads that folder (not the packaged encoder) to serve them."""
    import shutil

    from vilmo import value_net

    encoder = tmp_path / "my-encoder"
    shutil.copytree(packaged_model_path(), encoder)
    bert, _ = load_base(encoder)
    config = write_network(tmp_path / "m", ValueNet(bert, 2, n_frozen=5), ("cm", "harm"),
                           WindowSpec(), encoder=str(encoder))
    assert config["encoder"] == str(encoder.resolve()) and config["base"] == "my-encoder"
    loaded_from: list[str] = []
    real = value_net.load_base

    def spy(path: str | Path) -> tuple[object, object]:
        loaded_from.append(str(path))
        return real(path)

    monkeypatch.setattr(value_net, "load_base", spy)
    BuiltinClassifier(tmp_path / "m", quantize=False, cache_size=0).pooled_logits(
        [ScoreInput("hello")])
    assert loaded_from == [str(encoder.resolve())]
