"""Dev screen of the "ranked" sentence reading's gate (issue 16): for every dev text of the
operating rule's groups, the highest pooled reading of its sentence spans (what the gate
reads) beside the shipped "rows" sentence reading at the shipped sentence points; prints, per
candidate gate, how many texts whose sentence reading the rows flag fall below it (would lose
their sentence reading) and the share of each group's texts that skip the span rows. Dev only.

    python bench/select_span_gate.py
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
from dev_split import dev_examples

from vilmo.judge.classifier import ScoreInput
from vilmo.judge.pooling import at_operating_point
from vilmo.judge.value_model import BuiltinClassifier, default_model_dir
from vilmo.judge.window_rows import pooled_spans
from vilmo.train.operating import dev_groups


def gate_scores(model: BuiltinClassifier, items: list[ScoreInput]) -> np.ndarray:
    """Per text, the highest pooled reading of its spans (0 for a text of one span)."""
    read = model._rows(items, sentences=True, alone=False)
    _, tokens = model._run(read.rows, read.owner, {p.row for p in read.places})
    out = np.zeros(len(items))
    if read.places:
        scores = model._span_scores(pooled_spans(tokens, read.places, len(model._model().names)))
        np.maximum.at(out, np.asarray([p.item for p in read.places]), scores)
    return out


def main() -> None:
    dev, _ = dev_examples(default_model_dir())
    rows = BuiltinClassifier(cache_size=0, threads=os.cpu_count() or 1)
    ranked = BuiltinClassifier(cache_size=0, threads=os.cpu_count() or 1)
    loaded = ranked._model()
    ranked._loaded = dataclasses.replace(loaded, spec=dataclasses.replace(
        loaded.spec, span_reading="ranked"))
    m = rows._model()
    assert m.sentence_operating is not None and m.spec.span_reading == "rows"
    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, items in dev_groups(dev).items():
        gate, flagged = [], []
        for i in range(0, len(items), 64):
            part = items[i:i + 64]
            gate.append(np.asarray([gate_scores(ranked, [it])[0] for it in part]))
            sentences = np.asarray([r[1] for r in rows.readings(part)])
            flagged.append((at_operating_point(sentences, m.sentence_operating) >= 0.5)
                           .any(axis=1))
        found[name] = (np.concatenate(gate), np.concatenate(flagged))
        g, f = found[name]
        print(json.dumps({"group": name, "texts": len(g), "rows_sentence_flagged": int(f.sum()),
                          "their_lowest_gate_score": round(float(g[f].min()), 4) if f.any()
                          else None,
                          "gate_score_quantiles_10_50_90": np.round(
                              np.quantile(g, [0.1, 0.5, 0.9]), 4).tolist()}), flush=True)
    for candidate in (0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3):
        print(json.dumps({"gate": candidate, **{
            name: {"lose_sentence_flag": int((f & (g < candidate)).sum()),
                   "skip_span_rows": round(float((g < candidate).mean()), 3)}
            for name, (g, f) in found.items()}}), flush=True)


if __name__ == "__main__":
    main()
