"""Reading and writing OpenAI stream chunks (dicts): the text so far, and new chunks shaped
like the upstream's (same id, model, created), for refusals and released windows."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable
from typing import Any

from proxy.upstream import Chunk

CONTENT_FILTER = "content_filter"
_TOKEN = re.compile(r"\w+|[^\w\s]")


def tokens(text: str) -> int:
    """A tokenizer-free token count (words and punctuation), close enough for window sizes."""
    return len(_TOKEN.findall(text))


class ReplyText:
    """The text of a streamed reply, accumulated chunk by chunk: content and tool arguments."""

    def __init__(self) -> None:
        self.content: list[str] = []
        self.tools: dict[int, list[str]] = {}

    @classmethod
    def of(cls, chunks: Iterable[Chunk]) -> ReplyText:
        reply = cls()
        for chunk in chunks:
            reply.add(chunk)
        return reply

    def add(self, chunk: Chunk) -> tuple[str, bool, bool]:
        """Take one chunk; return its content, whether it carries tool calls, and whether it
        ends the reply (has a finish_reason)."""
        text, has_tools, finished = "", False, False
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            text += str(delta.get("content") or "")
            for call in delta.get("tool_calls") or []:
                has_tools = True
                arguments = (call.get("function") or {}).get("arguments") or ""
                self.tools.setdefault(int(call.get("index", 0)), []).append(str(arguments))
            finished = finished or bool(choice.get("finish_reason"))
        self.content.append(text)
        return text, has_tools, finished

    def tool_text(self) -> str:
        return "\n".join("".join(parts) for _, parts in sorted(self.tools.items()))

    @property
    def text(self) -> str:
        return "\n".join(p for p in ("".join(self.content), self.tool_text()) if p)


def without_text(chunk: Chunk) -> Chunk | None:
    """The chunk without its content and tool-call deltas (those are released by window);
    None when nothing else is left (no role, finish_reason or usage)."""
    choices = []
    meaningful = not chunk.get("choices")  # a usage chunk
    for choice in chunk.get("choices") or []:
        delta = {k: v for k, v in (choice.get("delta") or {}).items()
                 if k not in ("content", "tool_calls")}
        meaningful = meaningful or bool(delta) or bool(choice.get("finish_reason"))
        choices.append({**choice, "delta": delta})
    return {**chunk, "choices": choices} if meaningful else None


def chunk_like(template: Chunk, delta: dict[str, Any] | None,
               finish_reason: str | None = None) -> Chunk:
    """A chunk with the template's id, model and created; no choices when delta is None."""
    chunk: Chunk = {"id": template.get("id", "chatcmpl-vilmo"), "object": "chat.completion.chunk",
                    "created": template.get("created", 0), "model": template.get("model", "")}
    chunk["choices"] = [] if delta is None else [
        {"index": 0, "delta": delta, "finish_reason": finish_reason}]
    return chunk


def refusal_chunks(upstream: list[Chunk], text: str, with_role: bool = True) -> list[Chunk]:
    """A whole stream that says ``text`` and ends with finish_reason content_filter; the
    upstream's usage chunk, if any, is kept (the tokens were spent)."""
    template = upstream[0] if upstream else {}
    out = [chunk_like(template, {"role": "assistant", "content": ""})] if with_role else []
    out += [chunk_like(template, {"content": text}), chunk_like(template, {}, CONTENT_FILTER)]
    out += [c for c in upstream if not c.get("choices") and c.get("usage")]
    return out


async def iterate(chunks: list[Chunk]) -> AsyncIterator[Chunk]:
    """Already-decided chunks as the async iterator a stream expects."""
    for chunk in chunks:
        yield chunk
