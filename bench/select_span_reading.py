"""Dev screen of the sentence reading (issues 16 and 17): the shipped weights' dev readings with
sentence spans read as rows of their own ("rows"), pooled inside the whole window ("pooled",
or "pooled_head" with the window's head), "ranked<k>[@<gate>]" (the k spans the pooled reading
ranks first, scoring at least gate, read in rows) or not read at all ("none"), each with operating points refitted by the shipped rule
(``vilmo.train.operating.fit``) on dev only; prints each variant's rule and dev figures and the
seconds its readings took. The shipped protocol is then ``vilmo train classifier
--calibrate-only --out COPY`` on the winner (model card, "Reading by sentences").

    python bench/select_span_reading.py [rows pooled pooled_head ranked2 ranked1@0.1 none]
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

import numpy as np
from dev_split import dev_examples

from vilmo.judge import window_rows
from vilmo.judge.classifier import given_prompt
from vilmo.judge.heads import BUILTIN_VALUES
from vilmo.judge.value_model import BuiltinClassifier, default_model_dir
from vilmo.train.classifier import TrainSettings
from vilmo.train.operating import GROUPS, dev_groups, fit


def main(variants: list[str]) -> None:
    dev, settings = dev_examples(default_model_dir())
    groups = dev_groups(dev)
    for variant in variants:
        model = BuiltinClassifier(cache_size=0, threads=os.cpu_count() or 1)
        loaded = model._model()
        reading = ("rows" if variant in ("rows", "none") else
                   "ranked" if variant.startswith("ranked") else "pooled")
        window_rows.POOL_HEAD = variant == "pooled_head"
        keep, _, gate = variant.removeprefix("ranked").partition("@")
        model._loaded = dataclasses.replace(loaded, spec=dataclasses.replace(
            loaded.spec, span_reading=reading,
            max_spans=0 if variant == "none" else loaded.spec.max_spans,
            span_rows=int(keep or 2) if reading == "ranked" else loaded.spec.span_rows,
            span_gate=float(gate or 0.0)))
        whole, spans, plain = {}, {}, {}
        start = time.perf_counter()
        for name, items in groups.items():
            read = [r for i in range(0, len(items), 64) for r in model.readings(items[i:i + 64])]
            shape = (len(items), len(BUILTIN_VALUES))
            whole[name] = np.asarray([r[0] for r in read], np.float64).reshape(shape)
            spans[name] = np.asarray([r[1] for r in read], np.float64).reshape(shape)
            plain[name] = np.asarray([given_prompt(it.prompt) is None for it in items], bool)
        seconds = time.perf_counter() - start
        points = fit(whole, spans, plain, settings.get(
            "benign_flagged_target", TrainSettings().benign_flagged_target), BUILTIN_VALUES)
        for prefix in ("", "plain_"):
            rule = points[f"{prefix}operating_rule"]
            objective = rule["dev_harmful_flagged"] - rule["dev_refused_flagged"]
            print(json.dumps({"variant": variant, "texts": prefix or "all",
                              "objective": round(objective, 4), "seconds": round(seconds, 1),
                              **{k: rule[k] for k in rule if k.startswith(("dev_", "sent", "al",
                                                                           "floor"))}}),
                  flush=True)
        assert set(GROUPS) == set(whole)


if __name__ == "__main__":
    main(sys.argv[1:] or ["pooled", "pooled_head", "rows"])
