"""Bounds on what a stream costs the gateway, whatever the upstream writes (review r1).

- A choice's text is kept linearly: ``ChoiceText.add`` copied the whole field at every delta
  (150,000 tiny deltas held the event loop for 5 s in buffer mode), and chunked mode joined
  every field at each chunk and each sentence end.
- A buffered stream is read only until its text is over ``checks.max_chars``: its check is
  refused by that size all the same (503 ``check_too_large``), so the rest is never read.
- Chunked mode's partial checks widen with the reply: the judge read the whole reply so far
  every ``window_tokens`` (12,000 characters judged as 435,000).
- A chunked reply with ``n > 1`` one of whose choices went out unchecked (failed open) is
  recorded as failed open (guard ``error``), as plain and buffer mode record it.
- A stream holds at most ``MAX_HELD_CHUNKS`` chunks (a parsed chunk costs ~16 times its wire
  bytes): past it, 502 ``upstream_too_large``, as past ``upstream.max_response_bytes``.

Each counts work (characters copied, judged, chunks read), never time.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from conftest import guard_policy
from fakes import CRASH, FakeUpstream, KeywordClassifier, fake_services, post_chat

import proxy.chunks
from proxy.call import Call
from proxy.chunked import windowed
from proxy.chunks import ChoiceText
from proxy.guard import Guard
from proxy.metrics import Metrics
from proxy.outcome import FailedOpen, Judged
from proxy.protocol import UpstreamParams
from proxy.replies import ChatCompletionChunk, ReplyMessage
from proxy.upstream import Chunk
from vilmo.instruct.instructions import Instruction
from vilmo.instruct.principles import PrincipleBank
from vilmo.policy import load_policy

POLICIES = {
    "b-small": guard_policy("block", "buffer", max_chars=300),
    "b-buffer": guard_policy("block", "buffer"),
    "b-chunked": guard_policy("block", "chunked"),
    "b-open-buffer": guard_policy("block", "buffer", on_error="open"),
    "b-open-chunked": guard_policy("block", "chunked", on_error="open"),
}


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    (tmp_path / "default.yaml").write_text("name: default\n" + guard_policy("allow"))
    for name, text in POLICIES.items():
        (tmp_path / f"{name}.yaml").write_text(f"name: {name}\n{text}")
    return tmp_path


class Counted(str):
    """A delta's text that counts the characters every concatenation with it copies."""

    copied = 0

    def __add__(self, other: str) -> Counted:
        Counted.copied += len(self) + len(other)
        return Counted(str.__add__(self, other))

    def __radd__(self, other: str) -> Counted:
        Counted.copied += len(self) + len(other)
        return Counted(str.__add__(other, self))


@pytest.fixture
def materialized(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The characters of every text a ``ChoiceText`` hands out (whole texts, fields, tails,
    the text up to a sentence end), counted; and those its concatenations copy."""
    counted = [0]

    def counting(name: str) -> None:
        method = getattr(ChoiceText, name)

        def wrapper(self: ChoiceText, *args: Any) -> Any:
            out = method(self, *args)
            if isinstance(out, str):
                counted[0] += len(out)
                return out
            items = list(out)
            counted[0] += sum(map(len, items))
            return iter(items)
        monkeypatch.setattr(ChoiceText, name, wrapper)

    for name in ("fields", "tail", "settled_text"):
        if hasattr(ChoiceText, name):
            counting(name)
    text = ChoiceText.text

    def whole(self: ChoiceText) -> str:
        out = cast(str, text.fget(self))  # type: ignore[attr-defined]
        counted[0] += len(out)
        return out
    monkeypatch.setattr(ChoiceText, "text", property(whole))
    Counted.copied = 0
    yield counted
    counted[0] += Counted.copied


def test_adding_deltas_copies_characters_linearly() -> None:
    copied = []
    for deltas in (2000, 4000):
        Counted.copied = 0
        text = ChoiceText()
        for _ in range(deltas):
            text.add({"content": Counted("ab. "), "reasoning_content": Counted("cd. ")})
        assert text.text == "\n".join(["cd. " * deltas, "ab. " * deltas])
        copied.append(Counted.copied)
    assert copied[1] <= 2.5 * copied[0]  # was 4 times: the whole field copied per delta


def _call(tmp_path: Path, name: str = "b-chunked") -> Call:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\n{POLICIES[name]}")
    return Call({"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
                load_policy(path), Instruction(""))


def _chunk(delta: dict[str, Any], finish: str | None = None, index: int = 0) -> Chunk:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": index, "delta": cast(ReplyMessage, delta),
                         "finish_reason": finish}]}


async def _words(text: str) -> AsyncIterator[Chunk]:
    for at, word in enumerate(text.split(" ")):
        yield _chunk({"content": Counted(word if at == 0 else f" {word}")})
    yield _chunk({}, "stop")


class CountingGuard(Guard):
    """The guard, keeping each text it was asked to judge."""

    def __init__(self) -> None:
        judge = KeywordClassifier()
        super().__init__(lambda policy: judge, Metrics(["m"]))
        self.judged: list[str] = []

    async def _scores(self, policy: Any, items: Any, stage: Any) -> Any:
        self.judged += [item.response for item in items]
        return await super()._scores(policy, items, stage)


def _chunked(tmp_path: Path, reply: str) -> tuple[str, list[str]]:
    """A chunked stream of ``reply`` word by word: the content released (each release a
    prefix of a text the judge read before it went), and each text the judge read."""
    guard = CountingGuard()
    released = ""

    async def run() -> None:
        nonlocal released
        async for out in windowed(_call(tmp_path), _words(reply), guard):
            for choice in out["choices"] if isinstance(out, dict) else []:
                released += str(choice["delta"].get("content") or "")  # not counted
                if "REFUSED-BY-POLICY" not in released:
                    assert any(text.startswith(released) for text in guard.judged), released
        await guard.aclose()

    asyncio.run(run())
    return released, guard.judged


def _sentences(count: int) -> str:
    return " ".join(f"Sentence {i} is calm and fine." for i in range(count))


def test_chunked_judge_work_is_bounded_by_the_reply(tmp_path: Path) -> None:
    reply = _sentences(300)
    released, judged = _chunked(tmp_path, reply)
    assert released == reply  # whole, and every release was judged first (``_chunked``)
    assert judged[-1] == reply  # the last check is the whole-reply check
    assert 5 < len(judged) < 30  # partial checks still run (was 300), widening with the reply
    assert sum(map(len, judged)) <= 4 * len(reply)  # was 80 times the reply


def test_chunked_text_work_grows_linearly_with_the_reply(tmp_path: Path,
                                                         materialized: list[int]) -> None:
    work = []
    for sentences in (150, 300):
        materialized[0] = Counted.copied = 0
        _chunked(tmp_path, _sentences(sentences))
        work.append(materialized[0] + Counted.copied)
    assert work[1] <= 2.5 * work[0]  # linear: was 4 times (the fields joined per chunk)


def test_a_violation_late_in_a_long_chunked_reply_is_still_never_released(
        tmp_path: Path) -> None:
    released, _ = _chunked(tmp_path, _sentences(200) + " Then punch him hard. And more calm.")
    assert "punch" not in released and released.endswith("REFUSED-BY-POLICY")
    assert released.startswith("Sentence 0 is calm and fine.")


class TinyDeltas(FakeUpstream):
    """A stream of ``count`` chunks, each ``delta`` (tiny), with the chunks it yielded."""

    def __init__(self, count: int, delta: dict[str, Any], choices: int = 1) -> None:
        super().__init__()
        self.count, self.delta, self.choices, self.sent = count, delta, choices, 0

    async def stream(self, params: UpstreamParams) -> AsyncIterator[ChatCompletionChunk]:
        self.calls.append(params)
        for at in range(self.count):
            self.sent += 1
            yield _chunk({"role": "assistant", **self.delta} if at == 0 else self.delta)
            if at % 100 == 0:
                await asyncio.sleep(0)
        yield _chunk({}, "stop")


def _ask(policies: Path, bank: PrincipleBank, upstream: FakeUpstream, policy: str,
         **body: Any) -> tuple[httpx.Response, Any]:
    services = fake_services(policies, bank, upstream)

    async def main() -> httpx.Response:
        try:
            return await post_chat(services, {
                "model": "stub", "stream": True, "messages": [{"role": "user", "content": "hi"}],
                **body}, {"X-Vilmo-Policy": policy, "X-Vilmo-Annotate": "body"})
        finally:
            await services.guard.aclose()

    response = asyncio.run(main())
    return response, services.audit.records  # type: ignore[attr-defined]


def _events(response: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in response.text.splitlines()
            if line.startswith("data: {")]


def test_a_buffered_stream_is_read_only_until_it_is_over_max_chars(
        policies: Path, bank: PrincipleBank) -> None:
    upstream = TinyDeltas(20_000, {"content": "ab "})  # 60,000 characters; the limit is 300
    response, records = _ask(policies, bank, upstream, "b-small")
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "check_too_large"
    assert "checks.max_chars" in response.json()["error"]["message"]
    assert upstream.sent <= 300 // 3 + 2  # was 20,000: all read, then refused by its size
    assert records[-1].error_code == "check_too_large"


def test_a_buffered_stream_under_max_chars_is_still_delivered(
        policies: Path, bank: PrincipleBank) -> None:
    upstream = TinyDeltas(90, {"content": "ab "})
    response, _ = _ask(policies, bank, upstream, "b-small")
    assert response.status_code == 200, response.text
    assert "".join(c["delta"].get("content") or "" for e in _events(response)
                   for c in e.get("choices", [])) == "ab " * 90


def test_characters_that_show_nothing_do_not_stop_a_buffered_stream_early(
        policies: Path, bank: PrincipleBank) -> None:
    """The count that stops the reading is below the guard's (``shown_length``): 400
    characters of which 200 show, under the limit of 300, are read whole and judged."""
    upstream = TinyDeltas(200, {"content": "a\u200b"})
    response, records = _ask(policies, bank, upstream, "b-small")
    assert response.status_code == 200, response.text
    assert upstream.sent == 200 and records[-1].guard == "ok"


def test_a_long_delta_that_is_not_ascii_is_counted_by_its_ascii_only(
        policies: Path, bank: PrincipleBank) -> None:
    """Past ``_SHOWN_COUNT_CHARS`` a delta's count is its ASCII characters (no regex on the
    event loop); the guard still refuses the whole by its size."""
    upstream = TinyDeltas(3, {"content": "é" * 5000})
    response, _ = _ask(policies, bank, upstream, "b-small")
    assert response.status_code == 503 and upstream.sent == 3
    assert response.json()["error"]["code"] == "check_too_large"


@pytest.mark.parametrize("mode", ["buffer", "chunked"])
def test_a_stream_holds_at_most_max_held_chunks(policies: Path, bank: PrincipleBank,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 mode: str) -> None:
    monkeypatch.setattr(proxy.chunks, "MAX_HELD_CHUNKS", 50, raising=False)
    # chunked: a tool call's name ends no sentence, so the choice is held to its end
    delta = {"content": ""} if mode == "buffer" else {
        "tool_calls": [{"index": 0, "function": {"name": "f"}}]}
    upstream = TinyDeltas(200, delta)
    response, records = _ask(policies, bank, upstream, f"b-{mode}")
    if mode == "buffer":
        assert response.status_code == 502, response.text
        error = response.json()["error"]
    else:  # the headers went out before: the error comes as the stream's last event
        assert response.status_code == 200
        error = _events(response)[-1]["error"]
        assert not any(e.get("choices") for e in _events(response))  # nothing was released
    assert error["code"] == "upstream_too_large" and "50" in error["message"]
    assert upstream.sent <= 52
    assert records[-1].error_code == "upstream_too_large"
    small = TinyDeltas(40, delta)
    assert _ask(policies, bank, small, f"b-{mode}")[0].status_code == 200


class TwoChoices(FakeUpstream):
    """``n: 2``: choice 1 crashes the judge (its check fails, and fails open)."""

    async def stream(self, params: UpstreamParams) -> AsyncIterator[ChatCompletionChunk]:
        self.calls.append(params)
        for index, text in enumerate(["All is calm here. Nothing to see.",
                                      f"{CRASH} text nobody judged."]):
            for at, word in enumerate(text.split(" ")):
                delta = {"content": word if at == 0 else f" {word}"}
                yield _chunk(delta, index=index)
            yield _chunk({}, "stop", index=index)


@pytest.mark.parametrize("mode", ["buffer", "chunked"])
def test_a_choice_that_failed_open_records_the_reply_as_failed_open(
        policies: Path, bank: PrincipleBank, mode: str) -> None:
    response, records = _ask(policies, bank, TwoChoices(), f"b-open-{mode}", n=2)
    assert response.status_code == 200, response.text
    assert "".join(c["delta"].get("content") or "" for e in _events(response)
                   for c in e.get("choices", []) if c["index"] == 1).endswith("nobody judged.")
    assert records[-1].guard == "error" and records[-1].verdict is None
    notes = [e["vilmo"] for e in _events(response) if "vilmo" in e]
    if mode == "chunked":
        assert [n["guard"] for n in notes] == ["error"]


def test_the_last_judged_of_a_chunked_reply_with_a_choice_failed_open_is_failed_open(
        tmp_path: Path) -> None:
    guard = CountingGuard()

    async def two() -> AsyncIterator[Chunk]:
        async for chunk in TwoChoices().stream(cast(UpstreamParams, {"messages": []})):
            yield chunk

    async def run() -> list[Judged]:
        out = [item async for item in windowed(_call(tmp_path, "b-open-chunked"), two(), guard)
               if isinstance(item, Judged)]
        await guard.aclose()
        return out

    assert isinstance(asyncio.run(run())[-1].reply, FailedOpen)
