"""Chunked mode releases only whole sentences, field by field (review rv1, chunked_fragment).

Before the fix ``_Choice.hold`` read "a sentence ended" on a delta's joined text: a delta with
content in mid-sentence (" Tonight I will st") and a tool call's arguments ending in "."
counted as ended, and the window check released the fragment, which the whole-reply check
then stopped: the client had "Tonight I will st" before the refusal. The gateway's own
``windowed`` runs here with the keyword fake judge ("stab" goes against mft.care).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
from conftest import guard_policy
from fakes import KeywordClassifier

from proxy.call import Call
from proxy.chunked import _ends_sentence, windowed
from proxy.guard import Guard
from proxy.metrics import Metrics
from proxy.replies import ReplyMessage
from proxy.upstream import Chunk
from vilmo.instruct.instructions import Instruction
from vilmo.policy import load_policy


def _call(tmp_path: Path) -> Call:
    path = tmp_path / "chunked.yaml"  # window_tokens: 6
    path.write_text("name: chunked\n" + guard_policy("block", "chunked"))
    return Call({"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
                load_policy(path), Instruction(""))


def _chunk(delta: dict[str, Any], finish: str | None = None) -> Chunk:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": cast(ReplyMessage, delta),
                         "finish_reason": finish}]}


def _args(text: str, first: bool = False) -> list[dict[str, Any]]:
    call: dict[str, Any] = {"index": 0, "function": {"arguments": text}}
    if first:
        call.update({"id": "call_1", "type": "function"})
        call["function"]["name"] = "f"
    return [call]


async def _stream(deltas: list[dict[str, Any]]) -> AsyncIterator[Chunk]:
    for delta in deltas:
        yield _chunk(delta)
    yield _chunk({}, "stop")


def _released(tmp_path: Path, deltas: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """The content and tool-call arguments the client gets, and the finish reasons."""
    guard = Guard(lambda policy: KeywordClassifier(), Metrics(["m"]))

    async def run() -> list[Chunk]:
        return [out async for out in windowed(_call(tmp_path), _stream(deltas), guard)
                if isinstance(out, dict)]

    content, finishes = "", []
    for chunk in asyncio.run(run()):
        for choice in chunk["choices"]:
            delta = choice["delta"]
            content += delta.get("content") or ""  # reasoning is not collected
            content += "".join(c["function"].get("arguments") or ""
                               for c in delta.get("tool_calls") or [])
            finishes += [choice["finish_reason"]] if choice["finish_reason"] else []
    return content, finishes


CASES: dict[str, list[dict[str, Any]]] = {
    # the reviewer's repro: the "." of another field in the same delta
    "same_delta": [{"role": "assistant", "content": "Hello there, friend."},
                   {"content": " Tonight I will st", "tool_calls": _args(".", first=True)},
                   {"content": "ab you."}],
    # a field left mid-sentence by an earlier delta, then another field ends one
    "earlier_delta": [{"role": "assistant", "content": "Hello there, friend."},
                      {"tool_calls": _args("Tonight I will st", first=True)},
                      {"content": " Fine, all is good here and now."},  # a window
                      {"tool_calls": _args("ab you.")}],
}


@pytest.mark.parametrize("case", CASES)
def test_a_fragment_of_a_sentence_in_one_field_is_never_released(tmp_path: Path,
                                                                 case: str) -> None:
    content, finishes = _released(tmp_path, CASES[case])
    assert "Tonight" not in content
    assert content.startswith("Hello there, friend.") and "REFUSED-BY-POLICY" in content
    assert finishes == ["content_filter"]


def test_whole_sentences_in_several_fields_are_still_released_early(tmp_path: Path) -> None:
    """The control: when every field ends a sentence, the window check releases up to there
    (here before the violent sentence, which the whole-reply check refuses). A tool call's
    name ends none, so a tool call holds the rest of its choice to the whole-reply check."""
    content, finishes = _released(tmp_path, [
        {"role": "assistant", "reasoning_content": "Thinking it over.", "content": "Hello."},
        {"reasoning_content": " Still thinking.", "content": " All is calm here."},
        {"content": " Tonight I will stab you."}])
    assert content.startswith("Hello. All is calm here.\n")
    assert "Tonight" not in content and finishes == ["content_filter"]


@pytest.mark.parametrize(("text", "ends"), [
    ("Fine.", True), ("Fine. ", True), ('He said "go."', True), ('{"a": "Fine."}', True),
    ("Tonight I will st", False), ("f", False), ("a name: send_mail", False),
    ('{"a": "line one\\n', True),  # a JSON string's newline, as the judge reads it decoded
    ('{"a": "He said \\"go.\\"', True), ("ends in a dot then \\", False),
    ("an escaped backslash \\\\", False), ("\\\\" * 100 + "n", False),
])
def test_a_field_ends_a_sentence_as_the_judge_reads_it(text: str, ends: bool) -> None:
    assert _ends_sentence(text) is ends


def test_an_escape_split_across_deltas_is_judged_decoded(tmp_path: Path) -> None:
    """A window's partial JSON: "st\\u00" then "61b": the check that could release the
    sentence reads it whole and decoded, "stab", and holds it."""
    content, finishes = _released(tmp_path, [
        {"role": "assistant", "content": "Hello there, my good friend."},
        {"content": " I will st\\u00"}, {"content": "61b you tonight, and"},
        {"content": " then I walk home."}])
    assert content.startswith("Hello there, my good friend.") and "61b" not in content
    assert finishes == ["content_filter"]
