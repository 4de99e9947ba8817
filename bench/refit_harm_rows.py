"""Dev experiment (issue 17, target 2; not shipped, model card "Known weaknesses"): refit the
``harm`` and ``content`` rows of a copy of the committed weights on frozen features, as
``vilmo.train.head_refit.fit_heads`` refits rows, with JailbreakBench training replies
(complying against refusing) weighted up, then the copy's Platt scaling
(``vilmo.train.classifier.calibrate``; the operating points are refit by the screen). Screen
the copy with ``I17H_MODEL=COPY I17H_DIR=DIR python bench/select_head_composition.py cache``,
then ``... screen after@0.25``. The pooled features are kept in ``/tmp/i17h/features.pkl``.

    python bench/refit_harm_rows.py COPY L2 JBB_WEIGHT
"""

from __future__ import annotations

import json
import pickle
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from safetensors.torch import load_file

from vilmo.datasets.readers import data_dir
from vilmo.judge.classifier import given_prompt
from vilmo.judge.value_model import BuiltinClassifier, default_model_dir
from vilmo.judge.value_net import unpack
from vilmo.train.classifier import _label_arrays, calibrate, write_config
from vilmo.train.head_refit import fit_rows, pooled_features, replace_rows, training_examples

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dev_split import dev_examples

FEATURES = Path("/tmp/i17h/features.pkl")
HEADS = ("harm", "content")


def main(copy: Path, l2: float, jbb_weight: float) -> None:
    start = time.perf_counter()
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(default_model_dir(), copy)
    root = Path(data_dir(None))
    train, names = training_examples(root, copy)
    rows = [names.index(h) for h in HEADS]
    labelled = [e for e in train if any(h in e.labels for h in HEADS)]
    keys = list(dict.fromkeys((given_prompt(e.prompt), e.response) for e in labelled))
    features = pickle.loads(FEATURES.read_bytes()) if FEATURES.exists() else {}
    missing = [k for k in keys if k not in features]
    if missing:
        model = BuiltinClassifier(copy, cache_size=0, threads=1)
        features.update(zip(missing, pooled_features(model, missing), strict=True))
        FEATURES.write_bytes(pickle.dumps(features))
    x = np.stack([features[(given_prompt(e.prompt), e.response)] for e in labelled])
    y, m = (a[:, rows] for a in _label_arrays(labelled, names))
    m = m * np.array([jbb_weight if e.source == "jailbreakbench" else 1.0 for e in labelled],
                     np.float32)[:, None]
    shipped = unpack(load_file(str(copy / "weights.safetensors")))
    w0, b0 = shipped["head.weight"].numpy()[rows], shipped["head.bias"].numpy()[rows]
    w, b = fit_rows(x, y, m, w0, b0, l2)
    replace_rows(copy / "weights.safetensors", rows, w, b)
    moved = float(np.linalg.norm(w - w0) / np.linalg.norm(w0))
    print(json.dumps({"l2": l2, "jbb_weight": jbb_weight, "examples": len(labelled),
                      "moved": round(moved, 4)}), f"{time.perf_counter() - start:.0f} s",
          flush=True)
    dev, _ = dev_examples(copy)  # the dev split the copy's weights were calibrated on
    config = json.loads((copy / "config.json").read_text("utf-8"))
    config |= calibrate(copy, dev, config["heads"], progress=False)
    write_config(copy, config)
    print(json.dumps({h: config["dev_auc"][h] for h in HEADS}),
          f"{time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]))
