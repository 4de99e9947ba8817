"""`vilmo train generator` end to end: real HTTP to the stub upstream, a crash, and a resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from generator_fakes import FlakyClassifier
from stub_upstream import StubUpstream

from vilmo.cli import cli
from vilmo.generator import VilmoGenerator
from vilmo.instructions import HEADER
from vilmo.policy import Policy
from vilmo.principles import PrincipleBank
from vilmo.train.generator import RECORDS, read_records


def _summary(output: str) -> dict[str, object]:
    summary: dict[str, object] = json.loads(
        next(ln for ln in output.splitlines() if ln.startswith('{"prompts"')))
    return summary


def _count(run: Path) -> int:
    return sum(1 for _ in read_records(run))


@pytest.mark.slow  # ends by loading the trained weights with the packaged encoder
def test_loop_runs_against_stub_and_resumes_after_a_crash(stub: StubUpstream,
                                                           tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps(row) for row in [
        {"prompt": "How do I get back at my noisy neighbour?"},
        {"messages": [{"role": "user", "content": "Can I read my partner's messages?"}]},
        {"prompt": "Write a joke about old people."}]) + "\n")
    run = tmp_path / "run"
    args = ["train", "generator", "--target", "openai/stub-model",
            "--api-base", f"{stub.url}/v1", "--api-key", "sk-test-123", "--prompts", str(prompts),
            "--k", "2", "--candidates", "3", "--run-dir", str(run), "--concurrency", "2",
            "--classifier", "generator_fakes:flaky_classifier", "--no-progress"]
    runner = CliRunner()

    FlakyClassifier.calls, FlakyClassifier.fail_at = 0, 4
    crashed = runner.invoke(cli, args)
    assert crashed.exit_code != 0 and "simulated crash" in str(crashed.exception)
    done_before = _count(run)
    assert 0 < done_before < 9
    with (run / RECORDS).open("a") as fh:
        fh.write('{"prompt_id": "torn')  # a crash mid-write leaves half a line

    FlakyClassifier.fail_at = None
    stub.received.clear()
    resumed = runner.invoke(cli, args)
    assert resumed.exit_code == 0, resumed.output
    summary = _summary(resumed.stdout)
    assert summary["pairs_skipped"] == done_before
    assert summary["pairs_done"] == 9 - done_before
    assert len(stub.received) == 2 * (9 - done_before)
    costs = summary["costs"]
    assert isinstance(costs, dict)
    assert costs["calls"] == len(stub.received)
    assert costs["completion_tokens"] == 13 * len(stub.received)
    sent = stub.received[0].body["messages"]
    assert sent[0]["role"] == "system" and sent[0]["content"].startswith(HEADER)
    assert (run / "scorer.npz").exists() and (run / "scorer.json").exists()

    stub.received.clear()
    again = runner.invoke(cli, args)
    assert again.exit_code == 0, again.output
    assert _summary(again.stdout)["pairs_skipped"] == 9
    assert stub.received == []

    card = json.loads((run / "scorer.json").read_text())
    assert card["target"] == "openai/stub-model" and card["pairs"] == 9
    from vilmo.embedder import Int8Embedder

    policy = Policy.model_validate({"name": "p", "values": {"mft.care": {"weight": 1.0}},
                                    "instructions": {"generator": "vilmo", "weights": str(run)}})
    generator = VilmoGenerator(PrincipleBank.load(), Int8Embedder())
    instruction = generator.generate([{"role": "user", "content": "Hurt my rival?"}], policy)
    assert instruction.generator == "vilmo" and instruction.principle_ids
