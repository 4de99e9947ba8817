"""A reply the judge cannot read is one missing score, never a failed run or batch.

A lone UTF-16 surrogate (``"\\ud800"``) is legal JSON, so a target's reply or a `vilmo classify`
line can carry one; `tokenizers` refuses such a string. It crashed `vilmo eval` after every
sample was paid for (nothing written) and failed every line of a `vilmo classify` batch."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from fakes import KeywordClassifier

from vilmo.cli import cli
from vilmo.evaluation.evaluate import run_eval
from vilmo.evaluation.prompts import EvalPrompt
from vilmo.evaluation.report import markdown, write_outputs
from vilmo.evaluation.target import TargetClient, TargetModel
from vilmo.judge.classifier import ClassifierError, ScoreInput, ValueScores
from vilmo.judge.windowing import WordPieceTokenizer
from vilmo.policy import Policy
from vilmo.types import Messages

ODD = "A fine answer \ud800 with half an emoji."
POLICY = Policy.model_validate({"name": "t", "values": {"mft.care": {}}})


def word_piece() -> WordPieceTokenizer:
    from vilmo.judge.embedder import packaged_model_path

    try:
        return WordPieceTokenizer(packaged_model_path())
    except (FileNotFoundError, OSError) as error:  # pragma: no cover - no packaged encoder
        pytest.skip(f"no packaged encoder: {error}")


def test_the_tokenizer_reads_a_lone_surrogate_as_the_replacement_character() -> None:
    tokenizer = word_piece()
    clean = ODD.replace("\ud800", "\ufffd")
    assert tokenizer.encode(ODD) == tokenizer.encode(clean)
    odd, expected = tokenizer.encode_tokens(ODD), tokenizer.encode_tokens(clean)
    assert (odd.ids, odd.starts) == (expected.ids, expected.starts)  # offsets still index ODD


class PickyClassifier(KeywordClassifier):
    """The keyword fake, failing any batch that holds a lone surrogate (as `tokenizers` did)."""

    def score(self, items: Sequence[ScoreInput], value_ids: Sequence[str]) -> list[ValueScores]:
        if any("\ud800" in item.response for item in items):
            raise ClassifierError("TextInputSequence must be str")
        return super().score(items, value_ids)


class OneOddReply(TargetClient):
    async def _call(self, messages: Messages) -> str:
        self.costs.calls += 1
        return ODD if self.costs.calls == 3 else "He punched him."


def test_eval_leaves_out_the_reply_it_cannot_score(tmp_path: Path) -> None:
    prompts = [EvalPrompt(f"p{i}", [{"role": "user", "content": f"story {i}"}], ("mft.care",))
               for i in range(3)]
    result = run_eval(prompts, OneOddReply(TargetModel("scripted", retries=0, concurrency=1)),
                      PickyClassifier(), {"none": None}, POLICY, k=2)
    scores = [s for r in result.records for s in r.scores]
    assert sum(s is None for s in scores) == 1 and len(scores) == 6
    summary = result.as_dict()
    assert result.n_prompts == 3 and summary["conditions"]["none"]["unscored_replies"] == 1
    assert "could not score (left out): none 1" in markdown(summary)
    paths = write_outputs(result, tmp_path)
    replies = [t for line in paths["records"].read_text(encoding="utf-8").splitlines()
               for t in json.loads(line)["replies"]]
    assert ODD in replies  # written as its JSON escape, read back as the same text


def test_classify_fails_only_the_line_the_judge_cannot_read() -> None:
    stdin = "".join(json.dumps({"id": i, "response": text}) + "\n"
                    for i, text in (("a", "fine"), ("b", ODD), ("c", "BAD:mft.care")))
    result = CliRunner().invoke(cli, ["classify", "--values", "mft.care"], input=stdin,
                                obj={"builtin": PickyClassifier()})
    assert result.exit_code == 0, result.output
    a, b, c = (json.loads(line) for line in result.output.splitlines())
    assert a["id"] == "a" and a["violations"] == []
    assert b == {"line": 2, "error": "ClassifierError: TextInputSequence must be str"}
    assert c["id"] == "c" and "scores" in c


class Fixed:
    """Every value scored just under the default threshold of 0.5."""

    def score(self, items: Sequence[ScoreInput], ids: Sequence[str]) -> list[ValueScores]:
        return [ValueScores(dict.fromkeys(ids, 0.4999996)) for _ in items]


def test_classify_decides_on_the_real_score_not_the_rounded_one() -> None:
    result = CliRunner().invoke(cli, ["classify", "--values", "mft.care"],
                                input='{"response": "x"}\n', obj={"builtin": Fixed()})
    out = json.loads(result.output)
    assert out == {"scores": {"mft.care": 0.5}, "violations": []}


def test_the_encoder_reads_a_lone_surrogate_as_the_replacement_character() -> None:
    """The zero-shot judge of custom principles and the instruction generators embed texts
    with the int8 encoder, whose tokenizer refused a lone surrogate too."""
    from vilmo.judge.embedder import Int8Embedder

    try:
        encoder = Int8Embedder()
        clean = encoder.encode([ODD.replace("\ud800", "\ufffd")])
    except (FileNotFoundError, OSError) as error:  # pragma: no cover - no packaged encoder
        pytest.skip(f"no packaged encoder: {error}")
    assert np.allclose(encoder.encode([ODD]), clean)
