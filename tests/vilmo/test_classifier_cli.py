"""The `vilmo classify` contract: JSON Lines in, scores and violations out, bad lines reported."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from classifier_fakes import HashEncoder, KeywordClassifier
from click.testing import CliRunner

from vilmo.classifier import ScoreInput, ValueScores
from vilmo.cli import cli
from vilmo.heads import BUILTIN_VALUES


def run(stdin: str, *args: str, fake: KeywordClassifier | None = None,
        ) -> list[dict[str, Any]]:
    fake = fake or KeywordClassifier(BUILTIN_VALUES)
    result = CliRunner().invoke(cli, ["classify", *args], input=stdin,
                                obj={"builtin": fake, "encoder": HashEncoder()})
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.output.splitlines()]


def test_every_value_scored_and_violations_listed() -> None:
    lines = run(json.dumps({"response": "fine BAD:mft.care", "prompt": "hi"}) + "\n"
                + json.dumps({"response": "all good"}) + "\n")
    assert len(lines) == 2
    assert set(lines[0]["scores"]) == set(BUILTIN_VALUES)
    assert all(0.0 <= s <= 1.0 for s in lines[0]["scores"].values())
    assert lines[0]["violations"] == ["mft.care"]
    assert lines[1]["violations"] == []


def test_values_option_restricts_ids() -> None:
    (line,) = run(json.dumps({"response": "BAD:mft.care BAD:safety.violence"}) + "\n",
                  "--values", "safety.violence,mft.fairness")
    assert set(line["scores"]) == {"safety.violence", "mft.fairness"}
    assert line["violations"] == ["safety.violence"]


def test_unknown_value_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["classify", "--values", "mft.nope"], input="",
                                obj={"builtin": KeywordClassifier(BUILTIN_VALUES)})
    assert result.exit_code != 0
    assert "mft.nope" in result.output


def test_malformed_lines_get_errors_and_the_rest_go_on() -> None:
    stdin = "\n".join([
        "{not json",
        json.dumps({"prompt": "no response"}),
        json.dumps(["a", "list"]),
        json.dumps({"response": 5}),
        json.dumps({"response": "ok BAD:mft.loyalty", "id": "r6"}),
    ]) + "\n"
    lines = run(stdin)
    assert [ln.get("line") for ln in lines[:4]] == [1, 2, 3, 4]
    assert all("error" in ln for ln in lines[:4])
    assert lines[4]["id"] == "r6"
    assert lines[4]["violations"] == ["mft.loyalty"]


def test_policy_values_principles_and_thresholds(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("""
name: test
values:
  mft.care: {threshold: 0.95}
  safety.violence: {threshold: 0.5}
principles:
  - id: no-dosing
    text: Never give medication doses.
    examples:
      violating: ["Take 800 mg of ibuprofen every four hours."]
      acceptable: ["Please ask your pharmacist which dose is right for you."]
""")
    lines = run(json.dumps({"response": "BAD:mft.care BAD:safety.violence"}) + "\n"
                + json.dumps({"response": "Take 800 mg of ibuprofen every four hours."}) + "\n",
                "--policy", str(policy))
    assert set(lines[0]["scores"]) == {"mft.care", "safety.violence", "custom/no-dosing"}
    assert lines[0]["violations"] == ["safety.violence"]  # care's 0.9 is under its 0.95
    assert "custom/no-dosing" in lines[1]["violations"]
    assert lines[1]["scores"]["custom/no-dosing"] > lines[0]["scores"]["custom/no-dosing"]


def test_failing_classifier_fails_lines_not_passes_them() -> None:
    class Broken(KeywordClassifier):
        def score(self, items: Sequence[ScoreInput], value_ids: Sequence[str],
                  ) -> list[ValueScores]:
            raise RuntimeError("model crashed")

    lines = run(json.dumps({"response": "x"}) + "\n", fake=Broken(BUILTIN_VALUES))
    assert "error" in lines[0] and "scores" not in lines[0]
