"""Bad files and values given to `vilmo` commands end in one clear error line and a non-zero
exit, never a traceback or a run that waits forever."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from fakes import KeywordClassifier

from vilmo.cli import cli
from vilmo.evaluation.target import TargetClient, TargetError, TargetModel
from vilmo.types import Messages

ONE = json.dumps({"id": "dog", "prompt": "Tell me a story about a lost dog.",
                  "values": ["mft.care"]}) + "\n"


def run(args: list[str], obj: dict[str, Any] | None = None) -> Result:
    return CliRunner().invoke(cli, args, obj=obj)


def assert_clean_error(result: Result, words: str, exit_code: int = 1) -> None:
    """A click error: its message, the exit code, and no exception but click's own exit."""
    assert result.exit_code == exit_code, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert words in result.output, result.output
    assert "Traceback" not in result.output


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    made = {"one": tmp_path / "one.jsonl", "empty": tmp_path / "empty.jsonl",
            "latin1": tmp_path / "latin1.jsonl", "latin1_policy": tmp_path / "latin1.yaml",
            "two_docs": tmp_path / "two.yaml"}
    made["one"].write_text(ONE)
    made["empty"].write_text("")
    made["latin1"].write_bytes(ONE.encode() + b'{"prompt": "caf\xe9"}\n')
    made["latin1_policy"].write_bytes(b"name: caf\xe9\nvalues: {mft.care: {}}\n")
    made["two_docs"].write_text("---\nname: a\n---\nname: b\n")
    return made


def test_eval_with_no_prompt(files: dict[str, Path], tmp_path: Path) -> None:
    args = ["eval", "--target", "x", "--conditions", "none", "--out", str(tmp_path / "out")]
    assert_clean_error(run([*args, "--prompts", str(files["empty"])]), "no prompt to evaluate")
    assert not (tmp_path / "out").exists()


def test_eval_with_no_condition(files: dict[str, Path]) -> None:
    assert_clean_error(run(["eval", "--target", "x", "--prompts", str(files["one"]),
                            "--conditions", ","]), "no condition left to run")


def test_eval_where_every_call_fails_writes_records_then_fails(
        files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def down(self: TargetClient, messages: Messages) -> str:
        self.costs.failed_calls += 1
        raise TargetError("connection refused")

    monkeypatch.setattr(TargetClient, "complete", down)
    out = tmp_path / "out"
    result = run(["eval", "--target", "openai/x", "--prompts", str(files["one"]), "--k", "2",
                  "--conditions", "none", "--out", str(out)],
                 obj={"classifier": KeywordClassifier()})
    assert_clean_error(result, "no prompt has a scored reply")
    assert "2 failed calls" in result.output
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert [r["replies"] for r in records] == [[None, None]]
    assert json.loads((out / "summary.json").read_text())["costs"]["failed_calls"] == 2


def test_files_that_are_not_utf8(files: dict[str, Path]) -> None:
    assert_clean_error(run(["eval", "--target", "x", "--prompts", str(files["latin1"])]),
                       f"{files['latin1']}:2: not UTF-8")
    assert_clean_error(run(["eval", "--target", "x", "--prompts", str(files["one"]),
                            "--policy", str(files["latin1_policy"])]), "not UTF-8")
    assert_clean_error(run(["classify", "--policy", str(files["latin1_policy"])],
                           obj={"builtin": KeywordClassifier()}), "not UTF-8")
    validated = run(["policy", "validate", str(files["latin1_policy"])])
    assert validated.exit_code == 1 and "not UTF-8" in validated.output


def test_broken_policies_for_eval_classifier_and_train_generator(files: dict[str, Path],
                                                                 tmp_path: Path) -> None:
    bad = str(files["two_docs"])
    assert_clean_error(run(["eval", "classifier", "--policy", bad]), "invalid YAML")
    assert_clean_error(run(["train", "generator", "--target", "openai/x", "--prompts",
                            str(files["one"]), "--run-dir", str(tmp_path / "run"),
                            "--policy", bad]), "invalid YAML")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args", [
    ["eval", "--target", "x", "--threads", "-1"],
    ["eval", "--target", "x", "--temperature", "-0.5"],
    ["eval", "classifier", "--threads", "0"],
    ["train", "generator", "--limit", "-1"],
    ["train", "generator", "--concurrency", "0"],
    ["train", "generator", "--k", "0"],
    ["train", "generator", "--rpm", "0"],
    ["classify", "--batch-size", "0"],
    ["classify", "--threshold", "1.5"],
    ["train", "classifier", "--epochs", "0"],
    ["train", "classifier", "--threads", "0"],
    ["train", "classifier", "--limit", "-1"],
    ["train", "classifier", "--train-length", "0"],
    ["train", "stakes", "--threads", "0"],
    ["train", "stakes-reader", "--epochs", "0"],
], ids=lambda a: " ".join(a[:4]))
def test_counts_and_rates_out_of_range_are_usage_errors(args: list[str],
                                                        files: dict[str, Path],
                                                        tmp_path: Path) -> None:
    if args[:2] == ["train", "generator"]:
        args = [*args, "--target", "openai/x", "--prompts", str(files["one"]),
                "--run-dir", str(tmp_path / "run")]
    assert_clean_error(run(args), "Invalid value for", exit_code=2)


def test_a_target_client_that_could_never_call_is_refused() -> None:
    """concurrency 0 made every call wait on asyncio.Semaphore(0), for ever."""
    with pytest.raises(ValueError, match="concurrency"):
        TargetModel("openai/x", concurrency=0)
    with pytest.raises(ValueError, match="requests_per_minute"):
        TargetModel("openai/x", requests_per_minute=0)
