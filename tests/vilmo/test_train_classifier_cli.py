"""`vilmo train classifier` hands its options to the training recipe unchanged (the model card's
command must reproduce the shipped weights)."""

from __future__ import annotations

import json
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


def test_the_alone_weight_reaches_training_and_calibrate_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped weight (0.25) had to be hand-written into the config before
    ``--calibrate-only``; ``--alone-weight`` now reaches the written window either way."""
    from vilmo.train import classifier as training
    from vilmo.train import zero_shot

    seen: list[float] = []

    def fake_train(root: Path, out: Path, settings: training.TrainSettings) -> dict[str, Any]:
        seen.append(settings.alone_weight)
        return {"training": {}}

    monkeypatch.setattr(training, "train_classifier", fake_train)
    monkeypatch.setattr(zero_shot, "fit", lambda root, out: {})
    out = tmp_path / "m"
    out.mkdir()
    (out / "config.json").write_text(json.dumps(
        {"heads": ["harm"], "window": {"max_length": 256, "alone_weight": 0.0},
         "operating_points": {"x": 0.5}}), "utf-8")
    windows: list[dict[str, Any]] = []
    monkeypatch.setattr(training, "build", lambda *a: ([], []))
    monkeypatch.setattr(training, "calibrate",
                        lambda out_dir, dev, names, progress: {"calibrated_on": "test"})

    def fake_points(out_dir: Path, dev: object, target: float) -> dict[str, Any]:
        windows.append(json.loads((out_dir / "config.json").read_text("utf-8"))["window"])
        return {}

    monkeypatch.setattr(training, "operating_points", fake_points)
    runner = CliRunner()
    base = ["train", "classifier", "--data-dir", str(tmp_path), "--out", str(out)]
    assert runner.invoke(cli, base).exit_code == 0
    assert runner.invoke(cli, [*base, "--alone-weight", "0.5"]).exit_code == 0
    assert seen == [0.25, 0.5]
    result = runner.invoke(cli, [*base, "--calibrate-only", "--alone-weight", "0.4"])
    assert result.exit_code == 0, result.output
    assert windows == [{"max_length": 256, "alone_weight": 0.4}]
    assert json.loads((out / "config.json").read_text("utf-8"))["window"]["alone_weight"] == 0.4
    # Without the option, recalibrating keeps the config's weight: it used to write the
    # default 0.25 over it, changing how the weights read replies.
    result = runner.invoke(cli, [*base, "--calibrate-only"])
    assert result.exit_code == 0, result.output
    assert windows[-1] == {"max_length": 256, "alone_weight": 0.4}


def test_an_alone_weight_outside_zero_one_is_refused(tmp_path: Path) -> None:
    """A weight outside [0, 1] extrapolates the two readings instead of mixing them."""
    from vilmo.judge.windowing import WindowSpec

    result = CliRunner().invoke(cli, ["train", "classifier", "--data-dir", str(tmp_path),
                                      "--alone-weight", "-3"])
    assert result.exit_code == 2
    assert "alone-weight" in result.output
    with pytest.raises(ValueError, match="alone_weight"):
        WindowSpec(alone_weight=1.5)
