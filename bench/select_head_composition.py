"""Dev screen of how a reply's two whole readings (after its prompt and alone) are composed per
head (issue 17, target 2): ``content`` (the text's own content, readable without the prompt)
taken from the reading alone, or the higher / mean of both, while ``harm`` (compliance) stays
after the prompt; with or without the score-level mix of the reading alone
(``window.alone_weight``); and the reply operating points fitted on every benign dev text (as
shipped) or on the prompted ones only (the card's known weakness).

Two steps: ``cache`` runs the shipped int8 path once (``BuiltinClassifier._window_logits``:
each row's logits, reply tokens pooled, sentence rows "ranked") for the calibration dev split
and the clear cases of ``bench/select_whole_pooling.py``, and saves them under ``--dir``;
``screen VARIANT...`` composes them in numpy exactly as ``BuiltinClassifier._values`` does
(checked against ``readings`` for the shipped config), refits the points by the shipped rule
(``vilmo.train.operating.fit``) and prints, per variant, the rule's figures, dev JailbreakBench
after the request (ROC-AUC of the highest ``default`` score, complying / refusing replies
flagged), benign prompted dev texts flagged, and the clear cases that go wrong under
``default``. Dev only: the held-out sets are never read.

    python bench/select_head_composition.py cache
    python bench/select_head_composition.py screen after@0.25 c=alone@0.25 c=max,h=min@0 c=alone@0.25:prompted
    (variant: <after | head=mode,...>@<alone_weight>[:prompted], head: c (content), h (harm),
    cm or any head name; mode: alone, max, min, mean, geo)
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from vilmo.judge.classifier import ScoreInput, given_prompt
from vilmo.judge.heads import BUILTIN_VALUES
from vilmo.judge.pooling import at_operating_point
from vilmo.judge.value_model import BuiltinClassifier
from vilmo.judge.window_rows import ALONE, ALONE_FINE, SENTENCE
from vilmo.policy import load_policy
from vilmo.policy_store import SHIPPED_POLICY_DIR
from vilmo.train.operating import GROUPS, dev_groups, fit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dev_split import dev_examples
from select_whole_pooling import auc, clear_cases

CACHE = Path(os.environ.get("I17H_DIR", "/tmp/i17h"))
MODEL_DIR = os.environ.get("I17H_MODEL") or None
"""Weights to screen (default: the committed ones), e.g. a copy with refit rows."""


def dev_items() -> tuple[list[ScoreInput], list[str], list[str]]:
    """The dev texts of ``vilmo.train.operating.dev_groups`` with their group and source."""
    dev, _ = dev_examples(Path(MODEL_DIR or "vilmo/models/value_classifier"))
    source: dict[tuple[str | None, str], str] = {}
    for e in dev:
        source.setdefault((given_prompt(e.prompt), e.response), e.source)
    by_group = dev_groups(dev)
    items = [it for g in GROUPS for it in by_group[g]]
    return (items, [g for g in GROUPS for _ in by_group[g]],
            [source[(given_prompt(it.prompt), it.response)] for it in items])


def cache() -> None:
    """Every row's logits of the dev texts and the clear cases, through the shipped path."""
    CACHE.mkdir(parents=True, exist_ok=True)
    items, groups, sources = dev_items()
    cases = clear_cases()
    everything = items + [it for _, it, _ in cases]
    model = BuiltinClassifier(MODEL_DIR, cache_size=0, threads=os.cpu_count() or 1)
    logits, owner, kind = [], [], []
    start = time.perf_counter()
    for i in range(0, len(everything), 64):
        out, own, kd = model._window_logits(everything[i:i + 64])
        logits.append(out)
        owner.append(np.asarray(own, np.int64) + i)
        kind.append(kd)
    np.savez(CACHE / "rows.npz", logits=np.concatenate(logits), owner=np.concatenate(owner),
             kind=np.concatenate(kind))
    meta = {"groups": groups, "sources": sources,
            "plain": [given_prompt(it.prompt) is None for it in everything],
            "cases": [[name, bad] for name, _, bad in cases]}
    (CACHE / "meta.json").write_text(json.dumps(meta), "utf-8")
    # The shipped readings, to check that ``compose_readings`` reproduces them.
    read = model.readings(everything)
    np.savez(CACHE / "shipped.npz", whole=np.stack([r[0] for r in read]),
             spans=np.stack([r[1] for r in read]))
    print(f"cached {len(everything)} texts in {time.perf_counter() - start:.0f} s")


def compose_readings(model: BuiltinClassifier, logits: np.ndarray, owner: np.ndarray,
                     kind: np.ndarray, n: int, modes: dict[str, str], alone_weight: float,
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Whole and sentence readings as ``BuiltinClassifier._values``, with each head of ``modes``
    (head: mode) in each row after the prompt replaced by its text's reading alone ("alone"),
    the higher ("max"), lower ("min"), mean ("mean") or geometric mean ("geo") of the two; a
    head not in ``modes`` as shipped (after the prompt)."""
    from vilmo.judge.heads import compose
    from vilmo.judge.pooling import max_pool, mix_alone

    m = model._model()
    probs = model._probs(logits, kind.astype(np.int8))
    span = kind == SENTENCE
    bare = (kind == ALONE) | (kind == ALONE_FINE)
    paired = ~span & ~bare
    has_alone = np.bincount(owner[bare], minlength=n) > 0
    for head, mode in modes.items():
        col = m.names.index(head)
        alone_h = max_pool(probs[bare][:, [col]], owner[bare], n)[:, 0]
        rows = paired & has_alone[owner]
        mine, theirs = probs[rows, col], alone_h[owner[rows]]
        probs[rows, col] = {"alone": theirs, "max": np.maximum(mine, theirs),
                            "min": np.minimum(mine, theirs), "mean": 0.5 * (mine + theirs),
                            "geo": np.sqrt(mine * theirs)}[mode]
    vio, _ = compose(probs, m.names)
    whole = max_pool(vio[paired], owner[paired], n)
    if alone_weight > 0:
        whole = mix_alone(whole, max_pool(vio[bare], owner[bare], n), has_alone, alone_weight)
    return whole, max_pool(vio[span], owner[span], n)


def screen(variants: list[str]) -> None:
    rows = np.load(CACHE / "rows.npz")
    meta = json.loads((CACHE / "meta.json").read_text("utf-8"))
    logits, owner, kind = rows["logits"], rows["owner"], rows["kind"]
    n = len(meta["plain"])
    n_dev = len(meta["groups"])
    groups = np.asarray(meta["groups"])
    sources = np.asarray(meta["sources"])
    plain = np.asarray(meta["plain"], bool)
    model = BuiltinClassifier(MODEL_DIR, cache_size=0)
    policy = load_policy(SHIPPED_POLICY_DIR / "default.yaml")
    cols = [BUILTIN_VALUES.index(v) for v in policy.values]
    cuts = np.array([r.threshold for r in policy.values.values()])
    check = CACHE / "shipped.npz"
    jbb = (sources[:n_dev] == "jailbreakbench") & ~plain[:n_dev]
    for variant in variants:
        spec, _, fitted_on = variant.partition(":")
        heads, _, weight = spec.partition("@")
        short = {"c": "content", "h": "harm", "cm": "cm"}
        modes = {short.get(h, h): mode for h, _, mode in
                 (part.partition("=") for part in heads.split(",") if "=" in part)}
        whole, spans = compose_readings(model, logits, owner, kind, n, modes, float(weight))
        if variant == "after@0.25" and check.exists():
            shipped = np.load(check)
            print("reproduces shipped readings:",
                  float(np.abs(whole - shipped["whole"]).max()),
                  float(np.abs(spans - shipped["spans"]).max()))
        dev_w = {g: whole[:n_dev][groups == g].astype(np.float64) for g in GROUPS}
        dev_s = {g: spans[:n_dev][groups == g].astype(np.float64) for g in GROUPS}
        dev_p = {g: plain[:n_dev][groups == g] for g in GROUPS}
        points = fit(dev_w, dev_s, dev_p, 0.01, BUILTIN_VALUES)
        if fitted_on == "prompted":  # reply points from the prompted dev texts only
            prompted = {g: ~dev_p[g] for g in GROUPS}
            reply = fit({g: dev_w[g][prompted[g]] for g in GROUPS},
                        {g: dev_s[g][prompted[g]] for g in GROUPS},
                        {g: np.zeros(int(prompted[g].sum()), bool) for g in GROUPS}, 0.01,
                        BUILTIN_VALUES)
            points |= {k: reply[k] for k in ("operating_points", "sentence_operating_points",
                                             "operating_rule")}

        def vec(key: str, points: dict[str, Any] = points) -> np.ndarray:
            return np.array([points[key][v] for v in BUILTIN_VALUES])

        scores = np.where(plain[:, None],
                          np.maximum(at_operating_point(whole, vec("plain_operating_points")),
                                     at_operating_point(spans,
                                                        vec("plain_sentence_operating_points"))),
                          np.maximum(at_operating_point(whole, vec("operating_points")),
                                     at_operating_point(spans, vec("sentence_operating_points"))))
        top = scores[:, cols].max(axis=1)
        flagged = np.asarray((scores[:, cols] >= cuts).any(axis=1), bool)
        dev_flag, dev_top = flagged[:n_dev], top[:n_dev]
        complied, refused = jbb & (groups == "harmful"), jbb & (groups == "refused")
        prompted_benign = (groups == "benign") & ~plain[:n_dev]
        rule = points["operating_rule"]
        wrong = [f"{name} {top[n_dev + k]:.3f}" for k, (name, bad) in enumerate(meta["cases"])
                 if bool(flagged[n_dev + k]) != bad]
        print(json.dumps({
            "variant": variant,
            "objective": round(rule["dev_harmful_flagged"] - rule["dev_refused_flagged"], 4),
            "rule": {k: rule[k] for k in rule if k.startswith(("dev_", "sent", "al", "floor"))},
            "served": {"benign": f"{int(dev_flag[groups == 'benign'].sum())}/"
                                 f"{int((groups == 'benign').sum())}",
                       "benign_prompted": f"{int(dev_flag[prompted_benign].sum())}/"
                                          f"{int(prompted_benign.sum())}",
                       "harmful": f"{int(dev_flag[groups == 'harmful'].sum())}/"
                                  f"{int((groups == 'harmful').sum())}",
                       "refused": f"{int(dev_flag[groups == 'refused'].sum())}/"
                                  f"{int((groups == 'refused').sum())}"},
            "jbb_after_request": {"auc": round(auc(dev_top[complied], dev_top[refused]), 4),
                                  "complied_flagged": round(float(dev_flag[complied].mean()), 4),
                                  "refused_flagged": round(float(dev_flag[refused].mean()), 4),
                                  "n": [int(complied.sum()), int(refused.sum())]},
            "plain_objective": round(points["plain_operating_rule"]["dev_harmful_flagged"]
                                     - points["plain_operating_rule"]["dev_refused_flagged"], 4),
            "clear_cases_wrong": wrong,
            "clear_cases": {name: round(float(top[n_dev + k]), 3)
                            for k, (name, _) in enumerate(meta["cases"])}}), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["cache"]:
        cache()
    else:
        screen(sys.argv[2:] or ["after@0.25", "c=alone@0.25", "c=max@0.25", "c=mean@0.25"])
