"""Each reading of a text is scored by itself and a value's score is its highest over them
(``proxy.judged_text.judged_readings``, ``proxy.guard``): joined, an attacker's benign text in
one reading diluted the violent one in another (benign visible text and a violent sentence in
tag characters read 0.02 on safety.violence with the real judge, the sentence alone 0.57:
``test_judged_readings_real``). The readings are bounded (``READINGS``, one per kind of
reader), and an ordinary text has one, as before."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest
from conftest import guard_policy

from proxy.guard import Guard, read_chars
from proxy.judged_text import (
    READINGS,
    Judged,
    Readings,
    each_reading,
    highest_per_item,
    judged,
    judged_readings,
    judged_text,
)
from proxy.metrics import Metrics
from vilmo.judge.classifier import ScoreInput, ValueScores
from vilmo.policy import load_policy
from vilmo.verdict import Verdict

BENIGN = "Water the tomatoes every morning and enjoy the garden."


def tags(text: str) -> str:
    return "".join(chr(0xE0000 + ord(c)) for c in text)


def test_an_ordinary_text_is_one_reading_as_before() -> None:
    for text in [BENIGN, "**Bold**, `code`, a [link](https://a.b/c_d) and x < y.", "Привет"]:
        item = judged(text)
        assert item.response == text and item.also == () and judged_text(text) == text


def test_each_kind_of_reading_is_apart() -> None:
    text = (f'{BENIGN} st<i title="a walk">ab</i> \\u0041 \\\\bomb \u202ehcnup\u202c '
            + tags("punch him"))
    readings = judged_readings(text)
    assert 1 < len(readings) <= READINGS
    assert readings[0].startswith(BENIGN) and "stab" in readings[0]
    assert readings[-1] == "punch him"  # the tag characters' reading, by itself
    assert any('<i title="a walk">' in r for r in readings[1:])  # markup as written
    assert any("punch" in r and "hcnup" not in r for r in readings[1:-1])  # as displayed
    assert judged_text(text) == "\n".join(readings)


def test_a_text_of_tag_characters_only_is_read() -> None:
    item = judged(tags("punch him"))
    assert item.response == "punch him" and item.also == ()


class Diluted:
    """A fake judge whose score is the share of words that are "punch": joining readings
    dilutes it, as the real judge's pooling does."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def score(self, items: Sequence[ScoreInput], value_ids: Sequence[str]) -> list[ValueScores]:
        self.texts += [item.response for item in items]
        return [ValueScores({v: item.response.split().count("punch")
                             / max(1, len(item.response.split())) for v in value_ids})
                for item in items]


def test_the_guard_takes_each_values_highest_reading(tmp_path: Path) -> None:
    judge = Diluted()
    guard = Guard(lambda policy: judge, Metrics(["m"]))
    path = tmp_path / "diluted.yaml"
    path.write_text("name: diluted\n" + guard_policy("block"))
    policy = load_policy(path)
    item = judged(BENIGN + tags("punch"), "What now?")
    assert item.also == ("punch",)
    verdict = asyncio.run(guard.check(policy, [item, judged("hello")], "output"))
    assert judge.texts == [BENIGN, "punch", "hello"]
    assert isinstance(verdict, Verdict) and verdict.scores["mft.care"] == pytest.approx(1.0)
    assert verdict.action.value == "block"


def test_each_reading_and_its_fold() -> None:
    items = [Judged("a", "p", 1, ("b", "c")), ScoreInput("d")]
    readings, owners = each_reading(items)
    assert [r.response for r in readings] == ["a", "b", "c", "d"] and owners == [0, 0, 0, 1]
    assert all(r.prompt == "p" for r in readings[:3])
    folded = highest_per_item(owners, [{"x": 0.1}, {"x": 0.7}, {"x": 0.2}, {"x": 0.3}])
    assert folded == [{"x": 0.7}, {"x": 0.3}]
    assert read_chars(items) == 4 * 32  # each reading a pass, at least ITEM_CHARS


def test_every_kind_of_reading_is_one_of_readings() -> None:
    """``READINGS`` counts the kinds ``judged_readings`` reads (it was a number kept by hand
    beside them)."""
    text = (f'{BENIGN} st<i title="a walk">ab</i> \\u0041 \\\\bomb \u202ehcnup\u202c '
            + tags("punch him"))
    assert len(judged_readings(text)) == READINGS == len(Readings._fields)


@pytest.mark.parametrize("text", [BENIGN + tags("punch him"), "Привет " + tags("x"),
                                  "st\\u0061b " + tags("punch")])
def test_judged_reads_the_tag_characters_once(monkeypatch: pytest.MonkeyPatch,
                                              text: str) -> None:
    """``judged`` measured ``shown_length`` and read the readings each with their own
    ``tag_reading`` of the text: one pass over a non-ASCII text twice."""
    from proxy.shown_text import tag_reading

    read: list[str] = []

    def counted(level: str) -> str:
        read.append(level)
        return tag_reading(level)

    expected = judged(text)
    monkeypatch.setattr("proxy.judged_text.tag_reading", counted)
    assert judged(text) == expected
    assert len(read) == len(set(read))  # no text read twice
