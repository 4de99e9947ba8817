"""`vilmo eval --out`: a folder it cannot write is a clean error before any sample is paid for,
and the records are on disk before anything is summarised."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from fakes import KeywordClassifier

from vilmo.cli import cli
from vilmo.evaluation import evaluate
from vilmo.evaluation.target import TargetClient
from vilmo.types import Messages

ONE = json.dumps({"id": "dog", "prompt": "Tell me a story about a lost dog.",
                  "values": ["mft.care"]}) + "\n"


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[Messages]:
    made: list[Messages] = []

    async def complete(self: TargetClient, messages: Messages) -> str:
        made.append(messages)
        return "He helped the dog home."

    monkeypatch.setattr(TargetClient, "complete", complete)
    return made


def run(tmp_path: Path, out: Path) -> Result:
    prompts = tmp_path / "one.jsonl"
    prompts.write_text(ONE)
    return CliRunner().invoke(cli, ["eval", "--target", "openai/x", "--prompts", str(prompts),
                                    "--k", "2", "--conditions", "none", "--out", str(out)],
                              obj={"classifier": KeywordClassifier()})


def test_out_under_a_file_fails_before_sampling(tmp_path: Path, calls: list[Messages]) -> None:
    (tmp_path / "afile").write_text("x")
    result = run(tmp_path, tmp_path / "afile" / "run")
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "cannot write there" in result.output and "Traceback" not in result.output
    assert calls == []


def test_a_write_that_fails_is_a_clean_error(tmp_path: Path, calls: list[Messages]) -> None:
    (tmp_path / "out" / "summary.json").mkdir(parents=True)  # summary.json cannot be written
    result = run(tmp_path, tmp_path / "out")
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "cannot write the outputs to" in result.output
    assert len(calls) == 2 and (tmp_path / "out" / "records.jsonl").exists()


def test_records_are_written_before_the_summary(tmp_path: Path, calls: list[Messages],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the summary failed")

    monkeypatch.setattr(evaluate, "summarise", broken)
    result = run(tmp_path, tmp_path / "out")
    assert isinstance(result.exception, RuntimeError)
    (record,) = [json.loads(line) for line in
                 (tmp_path / "out" / "records.jsonl").read_text().splitlines()]
    assert record["replies"] == ["He helped the dog home."] * 2 and record["scores"][0]
