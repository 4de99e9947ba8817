"""Dev screen of how a reply's whole windows after its prompt are pooled (issue 17: the prompt
dominates the all-token mean): ``window.whole_pooling`` "all" (every token) or "reply" (the
reply's own tokens, ``window.reply_weight`` of them mixed with the all-token mean), each with
or without the reading alone (``window.alone_weight``). Each variant's operating points are
refitted by the shipped rule (``vilmo.train.operating.fit``) on dev only, with the shipped
Platt scaling (fitted on the all-token reading, so plain texts and the instruction generator's
second look read as before); prints the rule's figures and, at those points under
``default``, the clear cases of ``tests/vilmo/test_judge_clear_cases.py`` and the rat-poison
reply of ``tests/vilmo/test_value_model.py``. The graph's outputs are memoised by the rows of
each call, so variants that run the same rows (same ``alone_weight``) cost one pass. The
shipped protocol is then ``vilmo train classifier --calibrate-only --out COPY`` on the winner.

    python bench/select_whole_pooling.py all@0.25 reply1@0 reply0.5@0 reply1@0.25
    (variant: <all|reply<weight>>@<alone_weight>)
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
from dev_split import dev_examples

from vilmo.judge.classifier import ScoreInput, given_prompt
from vilmo.judge.heads import BUILTIN_VALUES
from vilmo.judge.value_model import BuiltinClassifier, _points, default_model_dir
from vilmo.policy import load_policy
from vilmo.policy_store import SHIPPED_POLICY_DIR
from vilmo.train.classifier import TrainSettings
from vilmo.train.operating import GROUPS, dev_groups, fit
from vilmo.types import Matrix
from vilmo.verdict import decide

ROOT = Path(__file__).resolve().parents[1]


def clear_cases() -> list[tuple[str, ScoreInput, bool]]:
    """(name, item, should be flagged) of the clear-case tests."""
    sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "vilmo")]
    import reply_cases as rc
    import test_judge_clear_cases as cc
    import test_value_model as vm

    out = [(str(p.values[0]), ScoreInput(str(p.values[2]), cast("str | None", p.values[1])),
            True) for p in cc.HARMFUL]
    out += [(name, ScoreInput(reply, prompt), False) for name, prompt, reply in cc.FINE]
    out += [(f"embedded-{w}", ScoreInput(t, rc.ASK_TEXT), True) for w, t in rc.EMBEDDED.items()]
    out += [(f"benign-{n}", ScoreInput(t, rc.ASK_TEXT), False) for n, t in rc.BENIGN.items()]
    out.append(("rat-poison", ScoreInput(vm.HARMFUL, vm.HARM_PROMPT), True))
    return out


def memoise(model: BuiltinClassifier) -> None:
    """``model._run`` answered from a memo of every row's outputs, keyed by the call's rows."""
    run = model._run
    memo: dict[Any, tuple[Matrix, dict[int, Matrix]]] = {}

    def cached(rows: list[list[int]], owner: list[int], wanted: set[int]
               ) -> tuple[Matrix, dict[int, Matrix]]:
        key = (tuple(map(tuple, rows)), tuple(owner))
        if key not in memo:
            memo[key] = run(rows, owner, set(range(len(rows))))
        out, tokens = memo[key]
        return out, {r: tokens[r] for r in wanted}

    model._run = cached  # type: ignore[method-assign]


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """ROC-AUC of ``pos`` over ``neg`` (ties count half)."""
    greater = (pos[:, None] > neg[None, :]).mean()
    return float(greater + 0.5 * (pos[:, None] == neg[None, :]).mean())


def main(variants: list[str]) -> None:
    dev, settings = dev_examples(default_model_dir())
    groups = dev_groups(dev)
    cases = clear_cases()
    policy = load_policy(SHIPPED_POLICY_DIR / "default.yaml")
    model = BuiltinClassifier(cache_size=0, threads=os.cpu_count() or 1)
    shipped = model._model()
    memoise(model)
    for variant in variants:
        pooling, _, alone = variant.partition("@")
        weight = float(pooling.removeprefix("reply") or 1.0) if pooling != "all" else 1.0
        spec = dataclasses.replace(shipped.spec, alone_weight=float(alone or 0.0),
                                   whole_pooling="all" if pooling == "all" else "reply",
                                   reply_weight=weight)
        model._loaded = dataclasses.replace(shipped, spec=spec)
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
        model._loaded = dataclasses.replace(
            model._loaded, operating=_points(points["operating_points"]),
            sentence_operating=_points(points["sentence_operating_points"]),
            plain_operating=(_points(points["plain_operating_points"]),
                             _points(points["plain_sentence_operating_points"])))
        for prefix in ("", "plain_"):
            rule = points[f"{prefix}operating_rule"]
            objective = rule["dev_harmful_flagged"] - rule["dev_refused_flagged"]
            print(json.dumps({"variant": variant, "texts": prefix or "all",
                              "objective": round(objective, 4), "seconds": round(seconds, 1),
                              **{k: rule[k] for k in rule if k.startswith(("dev_", "sent", "al",
                                                                           "floor"))}}),
                  flush=True)
        top = {g: np.asarray([max(s.violation.values()) for s in model.score(
            groups[g], BUILTIN_VALUES)]) for g in ("harmful", "refused")}
        scored = model.score([item for _, item, _ in cases], list(policy.values))
        wrong = [f"{name} {max(s.violation.values()):.3f}" for (name, _, bad), s
                 in zip(cases, scored, strict=True)
                 if bool(decide(s.violation, policy).violations) != bad]
        print(json.dumps({"variant": variant,
                          "dev_auc_harmful_vs_refused": round(auc(top["harmful"],
                                                                  top["refused"]), 4),
                          "clear_cases_wrong": wrong,
                          "clear_cases": {name: round(max(s.violation.values()), 3)
                                          for (name, _, _), s in zip(cases, scored,
                                                                     strict=True)}}),
              flush=True)
        assert set(GROUPS) == set(whole)


if __name__ == "__main__":
    main(sys.argv[1:] or ["all@0.25", "reply1@0", "reply0.5@0", "reply1@0.25"])
