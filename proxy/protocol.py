"""OpenAI wire models: what the gateway accepts and answers, apart from serving logic.

The request model validates only what the gateway reads (model, messages, stream); every other
field is kept as sent and passed to the upstream untouched (tools, response_format, seed, ...).
Fields are in the OpenAI documentation's order; our additions are fenced and marked.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class ContentPart(BaseModel):
    """One part of a message's content list; its own fields are checked where they matter."""

    model_config = ConfigDict(extra="allow", strict=True)
    type: Literal["text", "image_url", "input_audio", "file", "refusal"]
    text: str | None = None
    image_url: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _text_has_text(self) -> ContentPart:
        if self.type == "text" and self.text is None:
            raise ValueError("a text part needs `text`")
        if self.type == "image_url" and self.image_url is None:
            raise ValueError("an image_url part needs `image_url`")
        return self


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool | None = None


class ChatCompletionRequest(BaseModel):
    """POST /v1/chat/completions. The gateway forwards the body as sent (unknown fields too);
    the OpenAI fields are type-checked here so a malformed one is the client's 400, not a
    failure inside LiteLLM that would look like the upstream's."""

    model_config = ConfigDict(extra="allow", strict=True)
    messages: list[ChatMessageIn] = Field(min_length=1)
    model: str = Field(min_length=1)
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    n: int | None = Field(None, ge=1)
    presence_penalty: float | None = None
    response_format: dict[str, Any] | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: float | None = None
    top_p: float | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    user: str | None = None


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
