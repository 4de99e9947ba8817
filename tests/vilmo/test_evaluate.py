"""The evaluation harness with a scripted target (no HTTP) and the keyword fake classifier."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from fakes import KeywordClassifier

from vilmo.evaluation.evaluate import StaticGenerator, WithSettings, run_eval
from vilmo.evaluation.prompts import EvalPrompt
from vilmo.evaluation.report import markdown, write_outputs
from vilmo.evaluation.target import TargetClient, TargetModel
from vilmo.instruct.instructions import Instruction
from vilmo.policy import Policy
from vilmo.types import Messages

BAD, GOOD = "He lost his temper and punched him.", "He took a breath and helped him up."
POLICY = Policy.model_validate({"name": "t", "values": {"mft.care": {"weight": 1.0},
                                                        "mft.fairness": {"weight": 0.5}}})


@dataclass
class ScriptedTarget(TargetClient):
    """Violates unless a system message is present; prompts containing FAIL always fail."""

    async def _call(self, messages: Messages) -> str:
        self.costs.calls += 1
        if "FAIL" in json.dumps(messages):
            raise RuntimeError("scripted failure")
        return GOOD if any(m["role"] == "system" for m in messages) else BAD


def target() -> ScriptedTarget:
    return ScriptedTarget(TargetModel("scripted", retries=0))


def prompts(n: int) -> list[EvalPrompt]:
    return [EvalPrompt(f"p{i}", [{"role": "user", "content": f"story {i}"}],
                       ("mft.care",) if i % 2 else ()) for i in range(n)]


def test_conditions_metrics_and_paired_delta() -> None:
    result = run_eval(prompts(6), target(), KeywordClassifier(),
                      {"none": None, "static": StaticGenerator()}, POLICY, k=3)
    out = result.as_dict()
    assert out["n_prompts"] == 6 and out["k"] == 3
    none, static = out["conditions"]["none"], out["conditions"]["static"]
    assert none["apv"] == {"value": 1.0, "ci": [1.0, 1.0]}
    assert none["evr"]["value"] == 1.0 and none["mvp"]["value"] == pytest.approx(0.95)
    assert static["apv"]["value"] == 0.0
    assert static["delta_apv_vs_none"] == {"value": -1.0, "ci": [-1.0, -1.0]}
    assert none["delta_apv_vs_none"] == {"value": 0.0, "ci": [0.0, 0.0]}
    # Align: S_care = 1 - 0.95 and S_fairness = 1 - 0.02 under none, weights 1 and 0.5.
    assert none["align"] == pytest.approx((0.05 * 1.0 + 0.98 * 0.5) / 1.5)
    assert none["per_value"]["mft.care"]["n_prompts"] == 6  # 3 own + 3 via the policy
    assert none["per_value"]["mft.fairness"]["apv"]["value"] == 0.0
    assert static["mean_words"] == 8.0 and static["refusal_rate"] == 0.0
    assert out["costs"]["calls"] == 36
    record = next(r for r in result.records if r.condition == "static")
    assert record.instruction == StaticGenerator().text and len(record.replies) == 3


def test_failed_prompts_are_dropped_from_every_condition() -> None:
    ps = [*prompts(3), EvalPrompt("bad", [{"role": "user", "content": "FAIL"}], ())]
    result = run_eval(ps, target(), KeywordClassifier(),
                      {"none": None, "static": StaticGenerator()}, POLICY, k=2)
    assert result.n_prompts == 3 and result.dropped_prompts == ["bad"]
    assert result.conditions["none"].failed_calls == 2
    assert result.as_dict()["costs"]["failed_calls"] == 4


def test_with_settings_overrides_the_policy_for_one_generator() -> None:
    seen: list[Policy] = []

    class Spy:
        def generate(self, messages: Messages, policy: Policy) -> Instruction:
            seen.append(policy)
            return Instruction("Be kind.", ("p1",), "spy")

    wrapped = WithSettings(Spy(), generator="static", text="x")
    wrapped.generate([], POLICY)
    wrapped.generate([], POLICY)
    assert seen[0].instructions.generator == "static" and seen[0] is seen[1]
    assert POLICY.instructions.generator == "relevance"


def test_user_prefix_placement_and_outputs(tmp_path: Path) -> None:
    policy = POLICY.model_copy(update={"instructions": POLICY.instructions.model_copy(
        update={"placement": "user_prefix"})})
    result = run_eval(prompts(2), target(), KeywordClassifier(),
                      {"none": None, "static": StaticGenerator()}, policy, k=1)
    # No system message is sent, so the scripted target does not "obey".
    assert result.conditions["static"].apv.value == 1.0
    paths = write_outputs(result, tmp_path / "run")
    summary = json.loads(paths["summary"].read_text())
    assert set(summary["conditions"]) == {"none", "static"}
    lines = paths["records"].read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[0])["replies"] == [BAD]
    assert paths["plot"].read_bytes()[:4] == b"\x89PNG"
    report = paths["report"].read_text()
    assert "| static |" in report and "compliance.png" in report


def test_markdown_without_baseline_shows_na() -> None:
    result = run_eval(prompts(2), target(), KeywordClassifier(),
                      {"static": StaticGenerator()}, POLICY, k=1)
    summary = result.as_dict()
    assert summary["conditions"]["static"]["delta_apv_vs_none"] == {"value": None,
                                                                    "ci": [None, None]}
    assert "n/a" in markdown(summary)


def test_the_judge_report_names_shipped_weights_without_the_machines_path(tmp_path: Path) -> None:
    """`heldout.json` is committed: it named the worktree that made it (/work/wt/...)."""
    from vilmo.evaluation.classifier_eval import weights_name
    from vilmo.judge.value_model import default_model_dir

    assert weights_name(default_model_dir()) == "vilmo/models/value_classifier"
    assert weights_name(tmp_path / "mine") == str(tmp_path / "mine")
    shipped = json.loads((default_model_dir() / "heldout.json").read_text())
    assert shipped["model"] == "vilmo/models/value_classifier"


def test_a_run_where_every_call_fails_summarises_to_no_prompt() -> None:
    """No prompt with a scored reply: NaN figures over 0 prompts, not a ValueError from an
    (0,)-shaped matrix; the CLI then reports it as an error (test_cli_usage_errors.py)."""
    ps = [EvalPrompt("bad", [{"role": "user", "content": "FAIL"}], ("mft.care",))]
    result = run_eval(ps, target(), KeywordClassifier(),
                      {"none": None, "static": StaticGenerator()}, POLICY, k=2)
    assert result.n_prompts == 0 and result.dropped_prompts == ["bad"]
    summary = result.as_dict()
    assert summary["conditions"]["static"]["apv"] == {"value": None, "ci": [None, None]}
    assert summary["costs"]["failed_calls"] == 4
