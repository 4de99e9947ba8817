"""`vilmo classify`: JSON Lines in, scores out (a contract other tools rely on).

Each input line is an object with ``response`` (required) and ``prompt`` (optional); each output
line has ``scores`` (every value id -> violation probability) and ``violations`` (the ids at or
above the threshold). With ``--policy`` the ids are the policy's values and ``custom/<id>`` for
its own principles, with the policy's thresholds. A malformed line, or one the judge
fails on (a batch it fails is scored again line by line), yields ``{"line": n, "error": ...}``
and the rest go on. ``violations`` are decided on the scores before they are rounded.
An ``id`` field, when present, is echoed.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import click

from vilmo.judge.classifier import (
    ScoreInput,
    ValueClassifier,
    ValueScores,
    scores_to_violations,
)


def _parse(line: str) -> ScoreInput | str:
    """The line's item, or why it is malformed."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        return f"invalid JSON: {exc.msg}"
    if not isinstance(obj, dict):
        return "each line must be a JSON object"
    response, prompt = obj.get("response"), obj.get("prompt")
    if not isinstance(response, str):
        return "'response' (a string) is required"
    if prompt is not None and not isinstance(prompt, str):
        return "'prompt' must be a string when given"
    return ScoreInput(response, prompt or None)


def _chunks(stream: TextIO, size: int) -> Iterator[list[tuple[int, str]]]:
    chunk: list[tuple[int, str]] = []
    for n, line in enumerate(stream, start=1):
        chunk.append((n, line))
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _echo_id(line: str) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError:
        return {}
    return {"id": obj["id"]} if isinstance(obj, dict) and "id" in obj else {}


@click.command("classify")
@click.option("--values", "values_csv", default=None,
              help="Comma-separated value ids (default: every built-in value, or the policy's).")
@click.option("--policy", "policy_file", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), default=None,
              help="Use this policy's values, custom principles and thresholds.")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), default=0.5, show_default=True,
              help="Violation threshold for ids without a policy threshold.")
@click.option("--judge", "judge_model", default=None,
              help="LiteLLM model to judge custom principles (default: zero-shot).")
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.pass_context
def classify_command(ctx: click.Context, values_csv: str | None, policy_file: Path | None,
                     threshold: float, judge_model: str | None, batch_size: int) -> None:
    """Score JSON Lines from stdin: one {"response", "prompt"?} object per line."""
    obj: dict[str, Any] = ctx.obj if isinstance(ctx.obj, dict) else {}
    builtin: ValueClassifier = obj.get("builtin") or _builtin()
    classifier: ValueClassifier = builtin
    thresholds: dict[str, float] = {}
    if policy_file:
        from vilmo.judge.policy_classifier import PolicyClassifier
        from vilmo.policy import PolicyError, load_policy
        from vilmo.verdict import rules_of

        try:
            policy = load_policy(policy_file)
        except PolicyError as exc:
            raise click.ClickException(str(exc)) from exc
        custom: Any = None
        if policy.principles and judge_model:
            from vilmo.judge.llm_judge import LLMJudge

            custom = LLMJudge(judge_model, {p.id: p.text for p in policy.principles})
        elif policy.principles:
            from vilmo.judge.zero_shot import ZeroShotClassifier

            custom = ZeroShotClassifier.from_policy(policy, obj.get("encoder"))
        classifier = PolicyClassifier(builtin, custom)
        rules = rules_of(policy)
        ids, thresholds = list(rules), {k: r.threshold for k, r in rules.items()}
    else:
        from vilmo.judge.heads import BUILTIN_VALUES

        ids = list(BUILTIN_VALUES)
    if values_csv:
        wanted = [v.strip() for v in values_csv.split(",") if v.strip()]
        unknown = [v for v in wanted if v not in ids]
        if unknown:
            raise click.BadParameter(f"unknown value ids {unknown}", param_hint="--values")
        ids = wanted
    out = sys.stdout
    for chunk in _chunks(sys.stdin, batch_size):
        parsed = [(n, line, _parse(line)) for n, line in chunk]
        good = [(n, p) for n, _, p in parsed if isinstance(p, ScoreInput)]
        results, failures = _score_lines(classifier, good, ids)
        for n, line, p in parsed:
            if isinstance(p, str):
                record: dict[str, Any] = {"line": n, "error": p}
            elif n not in results:
                record = {"line": n, "error": failures[n]}
            else:
                scores = results[n].violation  # the verdict from the real scores, as decide()
                record = {**_echo_id(line), "scores": {v: round(s, 6) for v, s in scores.items()},
                          "violations": scores_to_violations(scores, thresholds, threshold)}
            out.write(json.dumps(record) + "\n")
        out.flush()


def _score_lines(classifier: ValueClassifier, good: list[tuple[int, ScoreInput]],
                 ids: list[str]) -> tuple[dict[int, ValueScores], dict[int, str]]:
    """Scores by line number, and why for each line that has none: a batch the judge fails
    is scored line by line, so one line it cannot read fails alone, never its neighbours."""
    try:
        return dict(zip((n for n, _ in good), classifier.score([p for _, p in good], ids),
                        strict=True)), {}
    except Exception:  # noqa: BLE001 - rescored line by line below
        results: dict[int, ValueScores] = {}
    failures: dict[int, str] = {}
    for n, item in good:
        try:
            (results[n],) = classifier.score([item], ids)
        except Exception as exc:  # noqa: BLE001 - a failing judge fails its line, never passes
            failures[n] = f"{type(exc).__name__}: {exc}"
    return results, failures


def _builtin() -> ValueClassifier:
    from vilmo.judge.value_model import BuiltinClassifier

    return BuiltinClassifier()

