"""Helpers for tests that read the gateway's streams as raw SSE events."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from conftest import ADMIN_KEY
from openai.types.chat import ChatCompletionMessageParam

from proxy.fields import audio_asked

ASK: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "My neighbour insulted me. What should I do?"}]


AUDIO_ASKED: dict[str, Any] = {"modalities": ["text", "audio"],
                               "audio": {"voice": "alloy", "format": "wav"}}
"""What a request that asks for audio output sends (a reply's ``audio`` reaches only it)."""


@contextmanager
def asking_audio() -> Iterator[None]:
    """Replies read as those to a request that asked for audio (``proxy.fields.audio_asked``)."""
    token = audio_asked.set(True)
    try:
        yield
    finally:
        audio_asked.reset(token)


def sse(gateway: str, policy: str, **body: Any) -> tuple[int, list[str]]:
    """Status and non-empty lines of a streamed chat completion."""
    request = {"model": "stub", "messages": ASK, "stream": True, **body}
    with httpx.stream("POST", f"{gateway}/chat/completions", json=request, timeout=60, headers={
            "Authorization": f"Bearer {ADMIN_KEY}", "X-Vilmo-Policy": policy}) as response:
        lines = [line for line in response.iter_lines() if line]
    return response.status_code, lines


def events(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in lines if line.startswith("data: {")]


def readable(delta: dict[str, Any]) -> str:
    """Every text of a delta or message a client could show."""
    text = "".join(str(delta.get(k) or "") for k in ("reasoning_content", "content", "refusal"))
    calls = [delta.get("function_call") or {}]
    calls += [c.get("function") or {} for c in delta.get("tool_calls") or []]
    return text + "".join(str(c.get("arguments") or "") for c in calls)


def by_choice(lines: list[str]) -> tuple[dict[int, str], dict[int, str | None]]:
    """Per choice index: everything the client could read, and the last finish_reason."""
    texts: dict[int, str] = {}
    finishes: dict[int, str | None] = {}
    for event in events(lines):
        for choice in event.get("choices", []):
            index = choice["index"]
            texts[index] = texts.get(index, "") + readable(choice.get("delta") or {})
            if choice.get("finish_reason"):
                finishes[index] = choice["finish_reason"]
    return texts, finishes


def plain(gateway: str, policy: str, **body: Any) -> httpx.Response:
    return httpx.post(f"{gateway}/chat/completions", timeout=60, json={
        "model": "stub", "messages": ASK, **body}, headers={
        "Authorization": f"Bearer {ADMIN_KEY}", "X-Vilmo-Policy": policy})


def blocked_reply(gateway: str, mode: str) -> tuple[str, str]:
    """The content a client got under a blocking policy and its last finish_reason: a plain
    reply (``mode`` "plain", ``g-block-buffer``) or a stream under ``g-block-<mode>``."""
    if mode == "plain":
        response = plain(gateway, "g-block-buffer")
        assert response.status_code == 200
        choice = response.json()["choices"][0]
        return choice["message"]["content"], choice["finish_reason"]
    status, lines = sse(gateway, f"g-block-{mode}")
    assert status == 200 and lines[-1] == "data: [DONE]"
    choices = [c for e in events(lines) for c in e.get("choices", [])]
    text = "".join(c["delta"].get("content") or "" for c in choices)
    return text, [c["finish_reason"] for c in choices if c.get("finish_reason")][-1]
