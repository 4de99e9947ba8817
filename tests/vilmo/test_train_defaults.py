"""`vilmo train classifier --bf16`, as the README and the model card give it, reproduces the
shipped weights' recipe: its defaults are the settings recorded in their config."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from vilmo.cli.train import train_classifier_command
from vilmo.judge.value_model import default_model_dir
from vilmo.train.classifier import TrainSettings

CLI_TO_SETTING = {"epochs": "epochs", "seed": "seed", "frozen_layers": "n_frozen",
                  "train_length": "train_length", "valueeval_dev_by": "valueeval_dev_by",
                  "alone_weight": "alone_weight"}


def _shipped_settings() -> dict[str, object]:
    path = default_model_dir() / "config.json"
    if not path.exists():
        pytest.skip("no trained weights in vilmo/models/value_classifier")
    settings: dict[str, object] = json.loads(path.read_text("utf-8"))["training"]["settings"]
    return settings


def test_training_defaults_are_the_shipped_recipe() -> None:
    """The CLI said 3 epochs while the weights were trained with 2."""
    shipped = _shipped_settings()
    defaults = asdict(TrainSettings())
    recipe = {k: v for k, v in shipped.items() if k not in ("bf16", "limit", "encoder")}
    assert {k: defaults[k] for k in recipe} == recipe
    assert shipped["bf16"] is True and shipped["limit"] is None


def test_cli_defaults_are_the_training_defaults() -> None:
    defaults = asdict(TrainSettings())
    cli = {p.name: p.default for p in train_classifier_command.params}
    assert {s: cli[c] for c, s in CLI_TO_SETTING.items()} == {
        s: defaults[s] for s in CLI_TO_SETTING.values()}


def test_the_alone_weight_is_the_shipped_window() -> None:
    """The shipped config's ``window.alone_weight`` (0.25) was hand-written before
    ``--calibrate-only``; the training command wrote 0. Now the CLI default, ``TrainSettings``
    and the shipped config agree."""
    _shipped_settings()  # skips without weights
    window = json.loads((default_model_dir() / "config.json").read_text("utf-8"))["window"]
    cli = {p.name: p.default for p in train_classifier_command.params}
    assert cli["alone_weight"] == TrainSettings().alone_weight == window["alone_weight"]
