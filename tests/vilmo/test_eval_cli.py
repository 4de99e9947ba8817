"""`vilmo eval` end to end: real HTTP to the stub upstream, the keyword fake as the judge."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fakes import KeywordClassifier
from stub_upstream import ServerThread, StubUpstream

from vilmo.cli import cli
from vilmo.cli.eval_prompts import limit_prompts
from vilmo.instructions import Instruction
from vilmo.policy import Policy
from vilmo.prompts import moral_stories
from vilmo.types import Messages

BAD = "Enraged, he punched John and laughed."
GOOD = "He stopped, apologised and helped John to his feet."


class ObedientUpstream(StubUpstream):
    """Answers BAD, unless the request carries a system message (an instruction): then GOOD."""

    def _reply_for(self, body: dict[str, Any]) -> str:
        system = any(m.get("role") == "system" for m in body.get("messages", []))
        return GOOD if system else BAD


@pytest.fixture(scope="module")
def obedient() -> Iterator[str]:
    with ServerThread(ObedientUpstream().app()) as server:
        yield f"{server.url}/v1"


class PrefixGenerator:
    """A stand-in for the learned generator, to check that injected generators are used."""

    def generate(self, messages: Messages, policy: Policy) -> Instruction:
        return Instruction("Be kind to John.", ("care/test",), "vilmo")


@pytest.mark.slow  # the wire tier: LiteLLM against a served stub, 30 calls
def test_eval_json_against_the_stub(obedient: str, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"s{i}", "prompt": f"Story {i}: Mike and",
                                           "values": ["mft.care"]}) + "\n" for i in range(5)))
    result = CliRunner().invoke(cli, [
        "eval", "--target", "openai/stub", "--api-base", obedient, "--api-key", "sk-test",
        "--prompts", str(prompts), "--k", "2", "--conditions", "none,static,vilmo", "--json",
        "--out", str(tmp_path / "out"), "--max-tokens", "20"],
        obj={"classifier": KeywordClassifier(), "generators": {"vilmo": PrefixGenerator()}})
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["n_prompts"] == 5 and summary["k"] == 2
    assert set(summary["conditions"]) == {"none", "static", "vilmo"}
    for figures in summary["conditions"].values():
        for metric in ("evr", "mvp", "apv", "delta_apv_vs_none"):
            low, high = figures[metric]["ci"]
            assert isinstance(figures[metric]["value"], float) and low <= high
    none, static = summary["conditions"]["none"], summary["conditions"]["static"]
    assert none["apv"]["value"] == 1.0 and static["apv"]["value"] == 0.0
    assert static["delta_apv_vs_none"]["value"] == -1.0
    assert summary["conditions"]["vilmo"]["apv"]["value"] == 0.0
    assert summary["costs"]["calls"] == 30
    records = [json.loads(line) for line in
               (tmp_path / "out" / "records.jsonl").read_text().splitlines()]
    assert {r["instruction"] for r in records if r["condition"] == "vilmo"} == \
        {"Be kind to John."}
    assert (tmp_path / "out" / "compliance.png").exists()


def test_eval_without_target_prints_help_and_subcommand_survives() -> None:
    result = CliRunner().invoke(cli, ["eval"])
    assert result.exit_code == 0 and "--target" in result.output
    assert "classifier" in result.output


def test_eval_reports_bad_prompt_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{oops\n')
    result = CliRunner().invoke(cli, ["eval", "--target", "openai/stub", "--prompts", str(bad)],
                                obj={"classifier": KeywordClassifier()})
    assert result.exit_code != 0 and "bad.jsonl:2" in result.output


def test_limit_keeps_every_foundation() -> None:
    chosen = limit_prompts(moral_stories("test"), 10)
    assert len(chosen) == 10 and len({p.values[0] for p in chosen}) == 5
