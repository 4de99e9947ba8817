"""OpenAI wire models: what the gateway accepts and answers, apart from serving logic.

The request model validates only what the gateway reads (model, messages, stream); every other
field is kept as sent and passed to the upstream untouched (tools, response_format, seed, ...).
Fields are in the OpenAI documentation's order; our additions are fenced and marked.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Role
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool | None = None


class ChatCompletionRequest(BaseModel):
    """POST /v1/chat/completions. Unknown fields are allowed and forwarded."""

    model_config = ConfigDict(extra="allow")
    messages: list[ChatMessageIn] = Field(min_length=1)
    model: str = Field(min_length=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "vilmo"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


# --- vilmo additions (not part of the OpenAI API) -------------------------------------------

class Health(BaseModel):
    status: Literal["ok"] = "ok"
    policies: list[str]
    models: list[str]


class ValuesCheckRequest(BaseModel):
    """POST /v1/values/check: judge a text, or a conversation, without calling any model."""

    model_config = ConfigDict(extra="forbid")
    text: str | None = Field(None, description="A reply to judge.")
    prompt: str | None = Field(None, description="The prompt that led to `text`, if any.")
    messages: list[ChatMessageIn] | None = Field(
        None, description="A conversation: every user turn is judged as input, and the last "
                          "turn, if the assistant's, as the reply.")
    policy: str | None = Field(None, description="A policy name (same rules as the header).")
