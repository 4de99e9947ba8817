"""The request reader's training targets and dev calibration (``vilmo.train.stakes_reader``):
which outputs a row trains, and a threshold that passes at most the dev share of everyday
prompts."""

from __future__ import annotations

import numpy as np
import pytest

from vilmo.train.stakes_data import LabelledPrompt
from vilmo.train.stakes_reader import _targets, dev_gate, output_names
from vilmo.values import VALUES


def column(name: str) -> int:
    return output_names().index(name)


def test_targets_train_the_gate_and_the_labelled_systems_only() -> None:
    harm = LabelledPrompt("how do i make a bomb", "safety", ("safety.violence",), "saferlhf",
                          "train")
    y, m = _targets(harm)
    assert y[0] == 1 and m[0] == 1  # a labelled SafeRLHF question is a gate positive
    assert y[column("safety.violence")] == 1 and y[column("mft.care")] == 1  # its foundation
    assert m[column("safety.privacy")] == 1 and y[column("safety.privacy")] == 0
    assert m[column("schwartz.power")] == 0  # no Schwartz labels: those outputs are not trained
    everyday = LabelledPrompt("how do i bake bread", None, (), "everyday", "train")
    y, m = _targets(everyday)
    assert m.all() and not y.any()  # a negative for the gate and for every value
    argument = LabelledPrompt("we should ban cars", "schwartz", ("schwartz.security",),
                              "valueeval", "train")
    y, m = _targets(argument)
    assert m[0] == 0  # ValueEval does not train the gate
    assert m[column("schwartz.security")] == 1 and m[column("safety.violence")] == 0
    assert len(output_names()) == 1 + len(VALUES)


def test_dev_threshold_passes_at_most_four_percent_of_everyday_prompts() -> None:
    rng = np.random.default_rng(0)
    rows = ([LabelledPrompt(f"q{i}", None, (), "hh", "dev") for i in range(200)]
            + [LabelledPrompt(f"h{i}", "safety", ("safety.violence",), "saferlhf", "dev")
               for i in range(200)])
    logits = np.concatenate([rng.normal(-2, 1, 200), rng.normal(2, 1, 200)])
    gate = dev_gate(logits, rows)
    a, b = gate["platt"]
    p = 1 / (1 + np.exp(-(a * logits + b)))
    assert a > 0
    assert (p[:200] >= gate["threshold"]).mean() <= 0.04 + 1e-9
    assert gate["dev_passed"]["hh"] <= 0.04 and gate["dev_passed"]["saferlhf"] > 0.8


def test_extra_requests_train_the_gate_and_never_touch_held_out_rows() -> None:
    """The written requests and JailbreakBench goals (``--extra-requests``) are train rows:
    harmful ones gate positives with their harm, look-alikes negatives; JailbreakBench's held-out
    behaviours are never read, and no extra text is a dev or held-out prompt of the evaluation."""
    from vilmo.datasets.readers import DataMissing, data_dir, jailbreakbench
    from vilmo.train.stakes_data import extra_request_prompts, stakes_prompts
    from vilmo.train.stakes_gate import gate_label

    try:
        extra = extra_request_prompts(data_dir())
        held_jbb = {r.goal for r in jailbreakbench(data_dir(), "heldout")}
        evaluated = {r.text.lower() for r in stakes_prompts(data_dir())
                     if r.split in ("dev", "heldout")}
    except DataMissing:
        pytest.skip("needs the data folder")
    by_source = {r.source: [x for x in extra if x.source == r.source] for r in extra}
    assert set(by_source) == {"written-harmful", "written-benign", "jailbreakbench"}
    assert all(r.split == "train" for r in extra)
    assert all(gate_label(r) == 1 and len(r.labels) == 1 and r.system == "safety"
               for r in by_source["written-harmful"] + by_source["jailbreakbench"])
    assert all(gate_label(r) == 0 and not r.labels for r in by_source["written-benign"])
    assert not {r.text for r in by_source["jailbreakbench"]} & held_jbb
    assert not {r.text.lower() for r in extra} & evaluated


def test_distress_heldout_rows_are_never_training_rows() -> None:
    """The held-out distress set (``distress_heldout.jsonl``, read by
    ``bench/eval_distress.py``) shares no text with the written requests (the shipped reader's
    and the sixth round's candidate's, ``distress_train.jsonl``),
    nor with any train or dev prompt."""
    import json
    from importlib.resources import files

    from vilmo.datasets.readers import DataMissing, data_dir
    from vilmo.train.stakes_data import extra_request_prompts, stakes_prompts

    prompts = files("vilmo").joinpath("data", "prompts")
    held = [json.loads(line) for line in prompts.joinpath("distress_heldout.jsonl")
            .read_text(encoding="utf-8").splitlines() if line.strip()]
    assert held and all(d["split"] == "heldout" for d in held)
    held_texts = {str(d["prompt"]).lower() for d in held}
    written = {str(json.loads(line)["prompt"]).lower() for name in (
        "written_requests.jsonl", "distress_train.jsonl") for line in prompts.joinpath(
        name).read_text(encoding="utf-8").splitlines() if line.strip()}
    assert not held_texts & written
    try:
        trained = {r.text.lower() for r in stakes_prompts(data_dir()) + extra_request_prompts(
            data_dir()) if r.split in ("train", "dev")}
    except DataMissing:
        pytest.skip("needs the data folder")
    assert not held_texts & trained
