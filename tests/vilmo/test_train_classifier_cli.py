"""`vilmo train classifier` hands its options to the training recipe unchanged (the model card's
command must reproduce the shipped weights)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from vilmo.cli import cli


def test_options_reach_the_training_settings(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from vilmo.train import classifier as training
    from vilmo.train import zero_shot

    seen: list[training.TrainSettings] = []

    def fake_train(root: Path, out: Path, settings: training.TrainSettings) -> dict[str, Any]:
        seen.append(settings)
        return {"training": {"settings": {"n_frozen": settings.n_frozen}}}

    monkeypatch.setattr(training, "train_classifier", fake_train)
    monkeypatch.setattr(zero_shot, "fit", lambda root, out: {"slope": 1.0})
    result = CliRunner().invoke(cli, [
        "train", "classifier", "--data-dir", str(tmp_path), "--out", str(tmp_path / "m"),
        "--epochs", "2", "--frozen-layers", "2", "--seed", "5",
        "--valueeval-dev-by", "premise", "--bf16", "--encoder", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert [(s.epochs, s.n_frozen, s.seed, s.valueeval_dev_by, s.bf16, s.encoder)
            for s in seen] == [(2, 2, 5, "premise", True, str(tmp_path))]
    assert '"n_frozen": 2' in result.output
