"""A reply's ``audio`` reaches only a client that asked for audio (``modalities`` with
``"audio"``, or the ``audio`` parameter). Its base64 ``data`` cannot be judged, and a sentence
written without spaces is valid base64 (``IWillStabYouTonightWithAKnife``): before the fix an
upstream's ``choices[].message.audio.data`` (a stream's ``delta.audio``) went to every client,
unread, in plain replies and every stream mode. When audio was asked for, its ``transcript``
is what is judged (tests/proxy/test_reply_texts.py)."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from conftest import ADMIN_KEY
from streams import ASK, AUDIO_ASKED, events, plain, sse
from stub_upstream import StubUpstream

from proxy.fields import keep_allowed

pytestmark = pytest.mark.both_paths

SENTENCE = "IWillStabYouTonightWithKnife"  # valid base64: 28 letters, a multiple of 4
CALM = "Talk to him calmly tomorrow."
ASKED = AUDIO_ASKED
AUDIO_REPLY = {"content": None, "audio": {"id": "audio_1", "data": SENTENCE, "expires_at": 1,
                                          "transcript": CALM}}
MODES = ["plain", "buffer", "monitor", "chunked"]


def relayed(gateway: str, mode: str, **body: Any) -> tuple[str, list[dict[str, Any]]]:
    """What the client got (its whole body), and every ``audio`` in it."""
    if mode == "plain":
        response = plain(gateway, "g-block-buffer", **body)
        assert response.status_code == 200, response.text
        message = response.json()["choices"][0]["message"]
        return response.text, [message["audio"]] if message.get("audio") else []
    status, lines = sse(gateway, f"g-block-{mode}", **body)
    assert status == 200 and lines[-1] == "data: [DONE]"
    audio = [c["delta"]["audio"] for e in events(lines) for c in e.get("choices", [])
             if (c.get("delta") or {}).get("audio")]
    return "".join(lines), audio


@pytest.mark.parametrize("mode", MODES)
def test_audio_a_client_did_not_ask_for_never_reaches_it(gateway: str, stub: StubUpstream,
                                                         mode: str) -> None:
    stub.script = [AUDIO_REPLY]
    text, audio = relayed(gateway, mode)
    assert SENTENCE not in text and audio == []


@pytest.mark.parametrize("mode", MODES)
def test_audio_a_client_asked_for_is_relayed(gateway: str, stub: StubUpstream,
                                             mode: str) -> None:
    stub.script = [AUDIO_REPLY]
    text, audio = relayed(gateway, mode, **ASKED)
    assert audio, text
    assert "".join(a.get("data") or "" for a in audio) == SENTENCE
    assert "".join(a.get("transcript") or "" for a in audio) == CALM


@pytest.mark.parametrize("asked", [{"modalities": ["text", "audio"]},
                                   {"audio": {"voice": "alloy", "format": "wav"}},
                                   {"modalities": ["text"]}])
def test_either_parameter_asks_for_audio(gateway: str, stub: StubUpstream,
                                         asked: dict[str, Any]) -> None:
    stub.script = [AUDIO_REPLY]
    _, audio = relayed(gateway, "plain", **asked)
    assert bool(audio) is (asked != {"modalities": ["text"]})


def test_a_reply_s_audio_is_removed_outside_a_request_that_asked() -> None:
    """Outside a request's call (``audio_asked`` unset), as for one that did not ask."""
    reply: dict[str, Any] = {"choices": [{"index": 0, "message": {
        "role": "assistant", "content": None, **AUDIO_REPLY}}]}
    assert keep_allowed(reply, "message") is True
    assert reply["choices"][0]["message"] == {"role": "assistant", "content": None}
    null: dict[str, Any] = {"choices": [{"index": 0, "message": {"content": "Hi", "audio": None}}]}
    assert keep_allowed(null, "message") is False  # a null says nothing: left as it came


@pytest.mark.parametrize("asked", [False, True])
def test_the_openai_client_gets_audio_only_when_it_asked(gateway: str, stub: StubUpstream,
                                                         asked: bool) -> None:
    stub.script = [AUDIO_REPLY]
    client = openai.OpenAI(base_url=gateway, api_key=ADMIN_KEY, max_retries=0,
                           default_headers={"X-Vilmo-Policy": "g-block-buffer"})
    extra: dict[str, Any] = ASKED if asked else {}
    reply = client.chat.completions.create(model="stub", messages=ASK, **extra)
    audio = reply.choices[0].message.audio
    assert (audio.data if audio is not None else None) == (SENTENCE if asked else None)
    chunks = list(client.chat.completions.create(model="stub", messages=ASK, stream=True,
                                                 **extra))
    data = "".join(str(c.delta.model_dump().get("audio", {}).get("data") or "")
                   for chunk in chunks for c in chunk.choices if c.delta.model_dump().get("audio"))
    assert data == (SENTENCE if asked else "")
