"""The judge reads what a client decodes: JSON string escapes in tool-call arguments and
JSON-mode content (review rv1, json_escapes).

Before the fix the judge read the raw JSON text, ``I will st\\u0061b you tonight.``, found no
word against any value, and every mode on both paths relayed it: the client's ``json.loads``
got "stab". The keyword fake judges ("stab" goes against mft.care).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from streams import blocked_reply, events, plain, sse
from stub_upstream import StubUpstream

from proxy.judged_text import judged_text, unescaped

pytestmark = pytest.mark.both_paths

ESCAPED = '{"message": "I will st\\u0061b you tonight."}'
"""JSON text as a model may write it: a client decodes it to "I will stab you tonight."."""
CALM = "Talk to him calmly tomorrow and tell him how the insult made you feel."
PLACES: dict[str, dict[str, Any]] = {
    "tool_arguments": {"content": None, "tool_calls": [{"id": "call_1", "type": "function",
                                                        "function": {"name": "send",
                                                                     "arguments": ESCAPED}}]},
    "function_call": {"content": None,
                      "function_call": {"name": "send", "arguments": ESCAPED}},
    "custom_input": {"tool_calls": [{"id": "call_1", "type": "custom",
                                     "custom": {"name": "send", "input": ESCAPED}}]},
    "json_content": {"content": f'{{"first": "{CALM}", "then": "I will st\\u0061b you."}}'},
    # Sentence ends around it: in chunked mode the calm sentence goes out after a window
    # check, which must read the escaped one decoded to hold it.
    "content_sentences": {"content": f"{CALM} I will st\\u0061b you tonight. {CALM}"},
}


def _decoded(text: str) -> str:
    try:
        return json.dumps(json.loads(text), ensure_ascii=False)
    except ValueError:
        return text


@pytest.mark.parametrize("place", PLACES)
def test_escaped_words_are_judged_in_plain_replies(gateway: str, stub: StubUpstream,
                                                   place: str) -> None:
    stub.script = [PLACES[place]]
    response = plain(gateway, "g-block-buffer", response_format={"type": "json_object"})
    assert response.status_code == 200
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "content_filter"
    assert response.headers["x-vilmo-violations"] == "mft.care"
    assert "0061b" not in response.text


@pytest.mark.parametrize("mode", ["buffer", "chunked"])
@pytest.mark.parametrize("place", PLACES)
def test_escaped_words_are_judged_in_streams(gateway: str, stub: StubUpstream, place: str,
                                             mode: str) -> None:
    """Nothing of the escaped sentence reaches the client, in chunked mode not even before
    the whole-reply check (the window checks read the decoded text too)."""
    stub.script = [PLACES[place]]
    status, lines = sse(gateway, f"g-block-{mode}", response_format={"type": "json_object"})
    assert status == 200 and lines[-1] == "data: [DONE]"
    assert "0061b" not in "".join(lines)
    finishes = [c["finish_reason"] for e in events(lines) for c in e.get("choices", [])
                if c.get("finish_reason")]
    assert finishes[-1:] == ["content_filter"]


def test_a_reply_without_escapes_is_judged_as_written() -> None:
    assert judged_text(CALM) == CALM
    assert judged_text('{"a": "C:/path"}') == '{"a": "C:/path"}'


@pytest.mark.parametrize(("raw", "decoded"), [
    ("st\\u0061b", "stab"),
    ("st\\u0041B", "stAB"),
    ('say \\"stab\\"', 'say "stab"'),
    ("a\\nb\\tc\\/d\\\\e\\bf\\fg\\rh", "a\nb\tc/d\\e\bf\fg\rh"),
    ("smile \\ud83d\\ude00 now", "smile \U0001f600 now"),
    ("\\\\u0061", "a"),  # JSON in a JSON string: the application decodes it again
    ('{\\"m\\": \\"st\\\\u0061b\\"}', '{"m": "stab"}'),
])
def test_valid_escapes_are_decoded(raw: str, decoded: str) -> None:
    assert unescaped(raw) == decoded
    assert judged_text(raw).startswith(decoded)  # then the levels that read other words


@pytest.mark.parametrize("raw", [
    "lone \\ud800 high", "lone \\udc00 low", "\\ud83d\\u0041x"[:-1], "unknown \\q escape",
    "short \\u00", "ends in \\", "\\u12G4", "\\x41",
])
def test_unpaired_and_invalid_escapes_stay_as_written(raw: str) -> None:
    """Partial JSON (a chunked window ends mid-escape) and invalid escapes never crash, and
    nothing is made of them; the decoded text stays encodable for the judge's tokenizer."""
    decoded = unescaped(raw)
    decoded.encode("utf-8")
    assert decoded.replace("A", "\\u0041") == raw


def test_a_lone_surrogate_before_a_valid_escape_leaves_the_next_decoded() -> None:
    assert unescaped("\\ud800\\u0061") == "\\ud800a"


def test_decoding_is_bounded() -> None:
    """Each round halves a run of backslashes; the rounds are bounded."""
    raw = "\\" * 4096 + "u0061"
    assert len(unescaped(raw)) >= 4096 // 2 ** 4


INVISIBLE = {"hangul_filler": "\u3164", "zero_width_space": "\u200b"}
"""Characters that render as nothing, inside a word: the reader sees "stab"."""


@pytest.mark.parametrize("mode", ["plain", "buffer", "chunked"])
@pytest.mark.parametrize("mark", INVISIBLE.values(), ids=list(INVISIBLE))
def test_words_split_by_invisible_characters_are_judged(gateway: str, stub: StubUpstream,
                                                        mark: str, mode: str) -> None:
    """Before the fix the judge read "st\\u3164ab" (and the keyword fake "st\\u200bab") as no
    word; the real judge's tokenizer drops zero-width spaces, not the Hangul fillers
    (``test_judged_text_real.py``). What is relayed keeps them: only the judged text drops
    them."""
    stub.script = [{"content": f"{CALM} I will st{mark}ab you tonight. {CALM}"}]
    text, finish = blocked_reply(gateway, mode)
    assert finish == "content_filter" and "ab you" not in text


def test_what_renders_as_nothing_is_left_out_of_the_judged_text() -> None:
    hidden = "I will s\u00adt\u3164a\u115f\u1160b\ufeff you\u2060 \U000e0041tonight\ufe0f."
    # a tag character is left out where it stands, and read apart as the ASCII it mirrors
    # (its Hangul fillers between letters read as spaces in the plain reading too: review mr4,
    # each filler is read where it stands, proxy.plain_reading)
    assert judged_text(hidden) == "I will stab you tonight.\nI will st a b you tonight.\nA"
    assert judged_text("st\\u3164ab") == "stab\nst\\u3164ab\nst ab"  # decoded, as sent, plain
    assert judged_text("\u05e9\u05dc\u05d5\u05dd \u4f60\u597d \U0001f600") == (
        "\u05e9\u05dc\u05d5\u05dd \u4f60\u597d \U0001f600")  # visible text is kept
