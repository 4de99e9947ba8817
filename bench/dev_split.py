"""The dev split the ``select_*`` benches screen on: ``vilmo.train.examples.build`` with the
sizes, seed and ValueEval split a model's config.json records, so that a screen reads the same
dev examples its weights were calibrated on (and never the held-out sets)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vilmo.datasets.readers import Example, data_dir
from vilmo.train.classifier import TrainSettings
from vilmo.train.examples import Sizes, build


def dev_examples(model_dir: Path) -> tuple[list[Example], dict[str, Any]]:
    """The dev examples of the training run recorded in ``model_dir``/config.json (sizes it
    names that ``Sizes`` no longer has are dropped; seed and split default as training's),
    and that run's settings (the screens refit operating points with its targets)."""
    config = json.loads((model_dir / "config.json").read_text("utf-8"))
    training = config.get("training", {})
    settings = training.get("settings", {})
    known = set(Sizes.__dataclass_fields__)
    _, dev = build(Path(data_dir(None)),
                   Sizes(**{k: v for k, v in training.get("sizes", {}).items() if k in known}),
                   settings.get("seed", TrainSettings().seed),
                   settings.get("valueeval_dev_by", "premise"))
    return dev, settings
