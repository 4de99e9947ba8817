"""Reading and writing OpenAI replies and stream chunks (dicts): the text a client can read in
each choice, one chunk per choice, new chunks shaped like the upstream's (same id, model,
created) for refusals, and the stream's total deadline."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any, cast

from proxy.errors import StreamTimeout
from proxy.protocol import ReplyMessage
from proxy.upstream import Chunk, Closing, Completion

CONTENT_FILTER = "content_filter"
TEXT_FIELDS = ("reasoning_content", "content", "refusal")
"""The plain-text fields of a message or delta a client can read (besides call arguments)."""
_TOKEN = re.compile(r"\w+|[^\w\s]")


def tokens(text: str) -> int:
    """A tokenizer-free token count (words and punctuation), close enough for window sizes."""
    return len(_TOKEN.findall(text))


def readable_text(message: Mapping[str, Any]) -> str:
    """Every text of a message (or a delta) that reaches the client, and so is checked:
    reasoning, content, refusal, and the arguments of the function call and tool calls."""
    parts = [str(message.get(key) or "") for key in TEXT_FIELDS]
    calls = [message.get("function_call")]
    calls += [c.get("function") for c in message.get("tool_calls") or [] if isinstance(c, dict)]
    parts += [str(c.get("arguments") or "") for c in calls if isinstance(c, dict)]
    return "\n".join(p for p in parts if p)


def reply_texts(completion: Completion) -> dict[int, str]:
    """The readable text of each choice of a reply, by choice index."""
    texts = {int(c.get("index", i)): readable_text(c.get("message") or {})
             for i, c in enumerate(completion.get("choices") or [])}
    return texts or {0: ""}


class ChoiceText:
    """One choice of a streamed reply, rebuilt from its deltas into the message a plain reply
    would carry, so that a stream is checked on exactly the text its plain reply would be."""

    def __init__(self) -> None:
        self.message: dict[str, Any] = {}
        self._calls: dict[int, dict[str, str]] = {}

    def add(self, delta: Mapping[str, Any]) -> None:
        for key in TEXT_FIELDS:
            if delta.get(key):
                self.message[key] = self.message.get(key, "") + str(delta[key])
        call = delta.get("function_call")
        if isinstance(call, dict) and call.get("arguments"):
            function = self.message.setdefault("function_call", {"arguments": ""})
            function["arguments"] += str(call["arguments"])
        for part in delta.get("tool_calls") or []:
            if isinstance(part, dict):
                arguments = (part.get("function") or {}).get("arguments") or ""
                tool = self._calls.setdefault(int(part.get("index", 0)), {"arguments": ""})
                tool["arguments"] += str(arguments)
        if self._calls:
            self.message["tool_calls"] = [{"function": f} for _, f in sorted(self._calls.items())]

    @property
    def text(self) -> str:
        return readable_text(self.message)


def by_choice(chunk: Chunk) -> list[tuple[int, Chunk]]:
    """The chunk split into one chunk per choice (a chunk may carry several), by index."""
    return [(int(c.get("index", 0)), {**chunk, "choices": [c]})
            for c in chunk.get("choices") or []]


def delta_of(piece: Chunk) -> ReplyMessage:
    delta = piece["choices"][0].get("delta")
    return delta if isinstance(delta, dict) else {}


def reply_of(chunks: Iterable[Chunk]) -> dict[int, ChoiceText]:
    """Each choice's text in a whole stream."""
    choices: dict[int, ChoiceText] = {}
    for chunk in chunks:
        for index, piece in by_choice(chunk):
            choices.setdefault(index, ChoiceText()).add(delta_of(piece))
    return choices or {0: ChoiceText()}


def chunk_like(template: Chunk, delta: ReplyMessage | None,
               finish_reason: str | None = None, index: int = 0) -> Chunk:
    """A chunk with the template's id, model and created; no choices when delta is None."""
    chunk: Chunk = {"id": template.get("id", "chatcmpl-vilmo"), "object": "chat.completion.chunk",
                    "created": template.get("created", 0), "model": template.get("model", "")}
    chunk["choices"] = [] if delta is None else [
        {"index": index, "delta": delta, "finish_reason": finish_reason}]
    return chunk


def refusal_chunks(template: Chunk, text: str, with_role: bool = True,
                   index: int = 0) -> list[Chunk]:
    """A choice that says ``text`` and ends with finish_reason content_filter."""
    delta: ReplyMessage = {"role": "assistant", "content": text} if with_role else {
        "content": text}
    return [chunk_like(template, delta, index=index),
            chunk_like(template, {}, CONTENT_FILTER, index=index)]


def usage_chunks(chunks: Iterable[Chunk]) -> list[Chunk]:
    """The upstream's usage chunk, if any (kept when a reply is refused: the tokens were spent)."""
    return [c for c in chunks if not c.get("choices") and c.get("usage")]


def for_client(chunk: Chunk, wants_usage: bool) -> Chunk | None:
    """The chunk as the client asked for it: without ``usage`` unless it set
    ``stream_options.include_usage`` (the gateway always asks the upstream, to charge tokens);
    None for the usage-only chunk then."""
    if wants_usage or "usage" not in chunk:
        return chunk
    if not chunk.get("choices"):
        return None
    if chunk["usage"] is None:  # OpenAI's null in every chunk: nothing to drop, and the
        return chunk            # chunk keeps the upstream's bytes (``proxy.relay``)
    return cast(Chunk, {k: v for k, v in chunk.items() if k != "usage"})


async def iterate(chunks: list[Chunk]) -> AsyncIterator[Chunk]:
    """Already-decided chunks as the async iterator a stream expects."""
    for chunk in chunks:
        yield chunk


def until(deadline: float, chunks: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
    """The stream, ended with ``StreamTimeout`` at ``deadline`` (event-loop time): the router's
    timeout applies per chunk, this one to the whole stream. Closing it closes the upstream,
    also before it was read."""
    return Closing(_until(deadline, chunks), chunks)


async def _until(deadline: float, chunks: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
    try:
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    chunk = await anext(chunks)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise StreamTimeout("the stream ran past streaming.stream_timeout_s",
                                    code="stream_timeout") from None
            yield chunk
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
