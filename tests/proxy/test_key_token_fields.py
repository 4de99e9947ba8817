"""A key's ``tpm`` counts every forwarded field the upstream reads, not only the messages and
tools: 100,000 tokens of ``response_format`` schema or ``prediction`` passed a ``tpm: 1000``
key. And audio is priced on its duration's bound, not its base64 / 4: a 10 s WAV was
estimated at 106,786 tokens (billed about 100) and refused on a ``tpm: 50000`` key."""

from __future__ import annotations

import base64
import io
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from store_gateway import new_key, serve_gateway, store_config
from stub_upstream import StubUpstream

from proxy.token_estimate import (
    AUDIO_MAX_TOKENS,
    AUDIO_MIN_TOKENS,
    MEDIA_TOKENS,
    estimated_tokens,
    media_tokens,
)

BIG = "Describe the value of honesty in great detail, sentence after sentence. " * 500
"""36,000 characters: about 9,000 tokens."""
ASK = [{"role": "user", "content": "hi"}]
FIELDS: list[dict[str, Any]] = [
    {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "object", "description": BIG, "properties": {"a": {"type": "string"}}}}}},
    {"prediction": {"type": "content", "content": BIG}},
    {"documents": [{"title": "Notes", "text": BIG}]},  # a model's allowed_params
]


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: next(iter(f)))
def test_a_forwarded_fields_text_is_estimated(field: dict[str, Any]) -> None:
    assert estimated_tokens({"model": "stub", "messages": ASK, **field}) >= len(BIG) // 4


def test_numbers_and_flags_are_not_counted_as_text() -> None:
    plain = {"model": "stub", "messages": ASK}
    knobs = {**plain, "temperature": 0.5, "n": 2, "seed": 7, "max_tokens": 10, "stream": True,
             "logit_bias": {"50256": -100}, "top_p": 0.9, "logprobs": True}
    assert estimated_tokens(knobs) == estimated_tokens(plain)


def wav(seconds: int) -> str:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\0\1" * 16000 * seconds)
    return base64.b64encode(buf.getvalue()).decode()


def test_audio_costs_its_durations_bound_and_a_file_its_decoded_bytes() -> None:
    audio = {"type": "input_audio", "input_audio": {"data": wav(10), "format": "wav"}}
    assert AUDIO_MIN_TOKENS <= media_tokens(audio) <= 3_300  # 320 kB / 100; it was 106,786
    tiny = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
    assert media_tokens(tiny) == AUDIO_MIN_TOKENS
    huge = {"type": "input_audio", "input_audio": {"data": "A" * 10**7, "format": "mp3"}}
    assert media_tokens(huge) == AUDIO_MAX_TOKENS
    data = "data:application/pdf;base64," + "QUJD" * 100_000  # 300,000 bytes decoded
    pdf = {"type": "file", "file": {"filename": "a.pdf", "file_data": data}}
    assert 75_000 <= media_tokens(pdf) <= 75_010  # decoded / 4 (base64 / 4 was 100,007)
    assert media_tokens({"type": "file", "file": {"file_id": "file-1"}}) == MEDIA_TOKENS


@pytest.fixture(name="knobs")
def knobs_fixture(stub: StubUpstream, policy_dir: Path, classifier: Any, tmp_path: Path,
                  ) -> Iterator[str]:
    """A keyed gateway (SQLite) whose model ``knobs`` lets ``documents`` through."""
    store = {"path": str(tmp_path / "state.db"), "spool_dir": str(tmp_path / "spool")}
    config = store_config(stub.url, policy_dir, store)
    models = config["model_list"]
    config["model_list"] = [*models, {
        "model_name": "knobs", "allowed_params": ["documents"],
        "litellm_params": {**models[0]["litellm_params"], "model": "openai/stub-knobs"}}]
    with serve_gateway(config, classifier) as url:
        yield url


@pytest.mark.slow
@pytest.mark.parametrize("field", FIELDS, ids=lambda f: next(iter(f)))
def test_a_forwarded_fields_text_cannot_pass_a_keys_tpm(
        knobs: str, stub: StubUpstream, field: dict[str, Any]) -> None:
    key = new_key(knobs, tpm=1000)
    seen = len(stub.received)
    reply = httpx.post(f"{knobs}/v1/chat/completions", timeout=30,
                       headers={"authorization": f"Bearer {key}"},
                       json={"model": "knobs", "max_tokens": 10, "messages": ASK, **field})
    assert reply.status_code == 429, reply.text
    assert "can never be admitted" in reply.json()["error"]["message"]
    assert len(stub.received) == seen
