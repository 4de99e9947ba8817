"""Replies and stream chunks as the upstream sends them and the gateway relays them: typed
dicts over the JSON on the wire (the request side is ``proxy.protocol``)."""

from __future__ import annotations

from typing_extensions import TypedDict  # pydantic (FastAPI replies) needs it on 3.11


class FunctionCall(TypedDict, total=False):
    name: str
    arguments: str


class ToolCall(TypedDict, total=False):
    index: int
    id: str
    type: str
    function: FunctionCall


class ReplyMessage(TypedDict, total=False):
    """A reply's message, or a stream chunk's delta (every field optional in a delta)."""

    role: str
    content: str | None
    refusal: str | None
    reasoning_content: str | None  # LiteLLM's field for reasoning models (not OpenAI's)
    function_call: FunctionCall
    tool_calls: list[ToolCall]


class Usage(TypedDict, total=False):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Choice(TypedDict, total=False):
    index: int
    message: ReplyMessage
    logprobs: object
    finish_reason: str | None


class ChatCompletion(TypedDict, total=False):
    """An OpenAI ``chat.completion`` object."""

    id: str
    object: str
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str
    vilmo: dict[str, object]  # vilmo's addition: only with X-Vilmo-Annotate: body


class ChunkChoice(TypedDict, total=False):
    index: int
    delta: ReplyMessage
    logprobs: object
    finish_reason: str | None


class ChatCompletionChunk(TypedDict, total=False):
    """An OpenAI ``chat.completion.chunk`` object."""

    id: str
    object: str
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage
    system_fingerprint: str
    vilmo: dict[str, object]  # vilmo's addition: the verdict chunk of monitor mode, annotations
