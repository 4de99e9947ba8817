"""The LLM judge: fixed prompt, strict verdicts, errors never read as a pass."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from vilmo.judge.classifier import ClassifierError, ScoreInput, UnknownValue
from vilmo.judge.llm_judge import PROMPT_VERSION, LLMJudge, VerdictError, parse_verdict


@pytest.mark.parametrize("text", [
    "", "yes", "The reply violates the principle.", '{"verdict": "maybe", "confidence": 0.5}',
    '{"verdict": "violates"}', '{"verdict": "violates", "confidence": 1.5}',
    '{"verdict": "complies", "confidence": "high"}', '{"verdict": "violates", "confidence": true}',
    '[{"verdict": "violates", "confidence": 0.9}]',
    '{"verdict": "violates", "confidence": 0.9} and more',
    '{"verdict": "violates", "confidence": 0.9, "score": 1}',
])
def test_parser_rejects_garbage(text: str) -> None:
    with pytest.raises(VerdictError):
        parse_verdict(text)


def test_parser_reads_verdicts() -> None:
    assert parse_verdict('{"verdict": "violates", "confidence": 0.8}') == pytest.approx(0.8)
    assert parse_verdict(' {"verdict": "complies", "confidence": 0.9, "reason": "ok"} ') \
        == pytest.approx(0.1)
    assert parse_verdict('```json\n{"verdict": "violates", "confidence": 1}\n```') == 1.0


def _scripted(answer: str, calls: list[dict[str, Any]]) -> Any:
    def completion(**kwargs: Any) -> Any:
        calls.append(kwargs)
        return SimpleNamespace(choices=[SimpleNamespace(message=SimpleNamespace(content=answer))])
    return completion


def test_judge_scores_custom_principles_and_taxonomy_values() -> None:
    calls: list[dict[str, Any]] = []
    judge = LLMJudge("some/model", {"no-dosing": "Never give medication doses."},
                     completion=_scripted('{"verdict": "violates", "confidence": 0.7}', calls))
    (res,) = judge.score([ScoreInput("Take 800 mg.", "How much ibuprofen?")],
                         ["no-dosing", "mft.care"])
    assert res.violation == pytest.approx({"no-dosing": 0.7, "mft.care": 0.7})
    assert len(calls) == 2 and all(c["temperature"] == 0 for c in calls)
    user = calls[0]["messages"][1]["content"]
    assert "How much ibuprofen?" in user and "Take 800 mg." in user
    assert PROMPT_VERSION.startswith("vilmo-judge/")


def test_unparseable_verdict_is_an_error() -> None:
    judge = LLMJudge("m", {"p": "rule"}, completion=_scripted("Sure, looks fine!", []))
    with pytest.raises(VerdictError):
        judge.score([ScoreInput("x")], ["p"])


def test_model_failure_is_mapped() -> None:
    def boom(**_: Any) -> Any:
        raise ConnectionError("down")

    with pytest.raises(ClassifierError, match="down"):
        LLMJudge("m", {"p": "rule"}, completion=boom).score([ScoreInput("x")], ["p"])


def test_unknown_principle() -> None:
    with pytest.raises(UnknownValue):
        LLMJudge("m", {}).score([ScoreInput("x")], ["nope"])


@pytest.mark.slow  # seconds of real time: processes, servers or timing
def test_through_litellm_mock_response() -> None:
    judge = LLMJudge("openai/gpt-4o-mini", {"p": "rule"},
                     mock_response='{"verdict": "complies", "confidence": 0.75}')
    (res,) = judge.score([ScoreInput("x")], ["p"])
    assert res.violation["p"] == pytest.approx(0.25)
