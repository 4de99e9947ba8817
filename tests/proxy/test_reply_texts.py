"""Every text a client can read is checked, per choice, in every mode (issue 12, points 4, 6).

The keyword fake judges ("stab" goes against mft.care); the stub upstream scripts replies with
reasoning, refusals, function calls and several choices. Each test failed before the fix:
function_call arguments and reasoning_content were never checked, and chunked mode merged all
choices into choice 0 while every mode judged all choices joined. Later (refuse by default):
audio transcripts, custom tool inputs, call names and ``reasoning`` were not checked, and their
text reached the client in plain replies and in buffer and chunked streams.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from streams import AUDIO_ASKED, by_choice, events, plain, sse
from stub_upstream import StubUpstream

pytestmark = pytest.mark.both_paths

VIOLENT = "then stab the guard at the gate and walk away"
CALM = "Talk to him calmly tomorrow and tell him how the insult made you feel."
HIDING_PLACES: dict[str, dict[str, Any]] = {
    "reasoning_content": {"reasoning_content": f"The user wants revenge, so {VIOLENT}.",
                          "content": CALM},
    "function_call": {"content": None,
                      "function_call": {"name": "plan", "arguments": json.dumps({"step": VIOLENT})}},
    "refusal": {"refusal": f"I will not say {VIOLENT}."},
    "tool_calls": {"tool_calls": [{"id": "call_1", "type": "function", "function": {
        "name": "plan", "arguments": json.dumps({"step": VIOLENT})}}]},
    # Fields not read before (issue: review of the guard's coverage): an audio reply's
    # transcript, a custom tool call's input, a call's name, reasoning under another name.
    "audio": {"content": None, "audio": {"id": "audio_1", "data": "UklGRiQAAABXQVZF",
                                         "expires_at": 1, "transcript": f"Sure, {VIOLENT}."}},
    "custom_tool": {"tool_calls": [{"id": "call_1", "type": "custom", "custom": {
        "name": "say", "input": f"Sure, {VIOLENT}."}}]},
    "tool_name": {"tool_calls": [{"id": "call_1", "type": "function", "function": {
        "name": "stab_the_guard", "arguments": "{}"}}]},
    "reasoning": {"reasoning": f"The user wants revenge, so {VIOLENT}.", "content": CALM},
}
ASKED = {"audio": AUDIO_ASKED}
"""What a request sends for its reply to carry its place (audio only to one that asks)."""
STREAMED_PLACES = [p for p in HIDING_PLACES if p != "refusal"]
"""LiteLLM (1.x) drops ``refusal`` deltas from streams, so no client sees them there; the
chunk helpers still check them (tests/proxy/test_chunks.py)."""


@pytest.mark.parametrize("place", HIDING_PLACES)
def test_every_readable_text_is_checked_in_plain_replies(gateway: str, stub: StubUpstream,
                                                         place: str) -> None:
    stub.script = [HIDING_PLACES[place]]
    response = plain(gateway, "g-block-buffer", **ASKED.get(place, {}))
    assert response.status_code == 200 and "stab" not in response.text
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "content_filter"
    assert response.headers["x-vilmo-violations"] == "mft.care"


@pytest.mark.parametrize("mode", ["buffer", "chunked"])
@pytest.mark.parametrize("place", STREAMED_PLACES)
def test_every_readable_text_is_held_and_checked_in_streams(gateway: str, stub: StubUpstream,
                                                            place: str, mode: str) -> None:
    stub.script = [HIDING_PLACES[place]]
    status, lines = sse(gateway, f"g-block-{mode}", **ASKED.get(place, {}))
    assert status == 200 and lines[-1] == "data: [DONE]"
    assert "stab" not in "".join(lines)
    texts, finishes = by_choice(lines)
    assert finishes == {0: "content_filter"} and "REFUSED-BY-POLICY" in texts[0]


AUDIO_DATA = "UklGRiQAAABXQVZFZm10IBAAAAABAAEA"


@pytest.mark.parametrize("violent", [True, False])
def test_chunked_mode_holds_an_audio_choice_to_its_end(gateway: str, stub: StubUpstream,
                                                       violent: bool) -> None:
    """Audio is checked only through its transcript, and its data may run ahead of it: a calm
    first sentence must not release the audio of a violent second one."""
    transcript = f"{CALM} Sure, {VIOLENT}." if violent else f"{CALM} {CALM}"
    stub.script = [{"content": None, "audio": {"id": "audio_1", "data": AUDIO_DATA,
                                               "expires_at": 1, "transcript": transcript}}]
    status, lines = sse(gateway, "g-block-chunked", **AUDIO_ASKED)
    assert status == 200 and lines[-1] == "data: [DONE]"
    _, finishes = by_choice(lines)
    if violent:
        assert AUDIO_DATA not in "".join(lines) and "stab" not in "".join(lines)
        assert finishes == {0: "content_filter"}
    else:
        assert AUDIO_DATA in "".join(lines) and finishes == {0: "stop"}


@pytest.mark.parametrize("place", STREAMED_PLACES)
def test_monitor_reports_violations_in_every_readable_text(gateway: str, stub: StubUpstream,
                                                           place: str) -> None:
    stub.script = [HIDING_PLACES[place]]
    _, lines = sse(gateway, "g-block-monitor", **ASKED.get(place, {}))
    assert "stab" in "".join(lines)  # monitor protects nothing, but it must see it
    assert events(lines)[-1]["vilmo"]["violations"] == ["mft.care"]


def test_each_choice_is_judged_and_blocked_alone_in_plain_replies(gateway: str,
                                                                  stub: StubUpstream) -> None:
    stub.script = [{"content": CALM}, {"content": f"Sure: {VIOLENT}."}, {"content": CALM}]
    response = plain(gateway, "g-block-buffer", n=3)
    choices = response.json()["choices"]
    assert [c["message"]["content"] for c in choices] == [CALM, "REFUSED-BY-POLICY", CALM]
    assert [c["finish_reason"] for c in choices] == ["stop", "content_filter", "stop"]
    assert response.headers["x-vilmo-action"] == "block"


@pytest.mark.parametrize("mode", ["buffer", "chunked"])
def test_each_choice_is_judged_and_blocked_alone_in_streams(gateway: str, stub: StubUpstream,
                                                            mode: str) -> None:
    # Choice 0 ends first: LiteLLM's stream wrapper drops what follows a first finish_reason
    # in the other choices' order (its finish, and words of a longer choice 0).
    stub.script = [{"content": CALM}, {"content": f"Sure: {VIOLENT}, and never tell anyone."}]
    status, lines = sse(gateway, f"g-block-{mode}", n=2)
    assert status == 200 and "stab" not in "".join(lines)
    texts, finishes = by_choice(lines)
    assert texts[0] == CALM and finishes[0] == "stop"
    assert "REFUSED-BY-POLICY" in texts[1] and finishes[1] == "content_filter"
    assert not texts[1].startswith(CALM[:10])  # nothing of choice 0 was merged into it


def test_monitor_reports_each_choice(gateway: str, stub: StubUpstream) -> None:
    stub.script = [{"content": CALM}, {"content": f"Sure: {VIOLENT}, and never tell anyone."}]
    _, lines = sse(gateway, "g-block-monitor", n=2)
    texts, _ = by_choice(lines)
    assert texts[0] == CALM and VIOLENT in texts[1]
    note = events(lines)[-1]["vilmo"]
    assert note["action"] == "block"
    assert note["choices"]["0"]["action"] == "allow" and note["choices"]["1"]["action"] == "block"
