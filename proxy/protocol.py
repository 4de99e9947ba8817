"""OpenAI wire models: what the gateway accepts and answers, apart from serving logic.

``FORWARDED_FIELDS`` is the one allow-list of request fields that reach the upstream: the
OpenAI chat-completion parameters, type-checked by ``ChatCompletionRequest``. Anything else a
client sends (``api_base``, ``api_key``, ``extra_headers``, ``num_retries``, ``mock_response``,
... which LiteLLM would obey) is dropped, or refused under ``strict_params``; a model_list
entry may allow more fields by name (``allowed_params``). Fields are in the OpenAI
documentation's order; our additions are fenced and marked.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError
from typing_extensions import TypedDict  # pydantic (FastAPI replies) needs it on 3.11

from proxy import request_bounds as bound
from proxy.extras import MAX_EXTRA_BODY_FIELDS, FewExtras
from proxy.tools import MAX_TOOLS, TOOL_MODE, Tool, ToolChoice, ToolMode

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


PART_FIELDS: dict[str, type] = {"text": str, "image_url": dict, "input_audio": dict,
                                "file": dict, "refusal": str}
"""Each content part carries the field its type names (OpenAI's rule; LiteLLM fails without)."""
_JSON_TYPES: dict[type, str] = {str: "string", dict: "object"}

MAX_MEDIA_PARTS = 64
"""The most image, audio and file parts one chat request may carry (a 400 beyond): each may
be megabytes an upstream reads, and none of them is value-checked."""

FILE_ID_PATTERN = r"^(?:file|assistant)-[A-Za-z0-9_-]{1,200}$"
"""An uploaded file's id: OpenAI's ``file-...``, Azure OpenAI's ``assistant-...``. Never a URL
or a path: LiteLLM downloads a ``file_id`` that starts with ``http``, in the gateway."""

FILE_DATA_PATTERN = (r"^data:[A-Za-z0-9.+-]+/[A-Za-z0-9.+-]+(?:;[A-Za-z0-9.+_=-]+)*;base64,"
                     r"[A-Za-z0-9+/]*={0,2}$")
"""``file_data`` as OpenAI takes it: a base64 ``data:`` URL (matched in linear time)."""


class FileRef(BaseModel):
    """A file part's ``file``: an uploaded file's id or the file's bytes, nothing else."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"anyOf": [
        {"required": [name], "properties": {name: {"type": "string"}}}
        for name in ("file_id", "file_data")]})
    file_id: str | None = Field(None, pattern=FILE_ID_PATTERN)
    file_data: str | None = Field(None, pattern=FILE_DATA_PATTERN)
    filename: str | None = Field(None, max_length=255)

    @model_validator(mode="after")
    def _names_a_file(self) -> FileRef:
        if self.file_id is None and self.file_data is None:
            raise ValueError("a file part needs `file_id` or `file_data`")
        return self


class ImageURL(BaseModel):
    """An image part's ``image_url`` (OpenAI's fields, and LiteLLM's ``format``, the media
    type). The gateway never downloads the URL: ``proxy.upstream.fetch_no_media_urls``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    url: str
    detail: Literal["auto", "low", "high"] | None = None
    format: str | None = Field(None, max_length=255)


class ContentPart(FewExtras):
    """One part of a message's content list; its own fields are checked where they matter."""

    model_config = ConfigDict(extra="allow", strict=True, json_schema_extra={"allOf": [
        {"if": {"properties": {"type": {"const": kind}}, "required": ["type"]},
         "then": {"required": [kind], "properties": {kind: {"not": {"type": "null"}} if
                  kind in ("image_url", "file") else {"type": _JSON_TYPES[field]}}}}
        for kind, field in PART_FIELDS.items()]})
    type: Literal["text", "image_url", "input_audio", "file", "refusal"]
    text: str | None = None
    image_url: ImageURL | None = None
    file: FileRef | None = None

    @model_validator(mode="after")
    def _has_its_field(self) -> ContentPart:
        value = getattr(self, self.type, None) if self.type in ("text", "image_url", "file") \
            else (self.model_extra or {}).get(self.type)
        expected = PART_FIELDS[self.type]
        if not isinstance(value, BaseModel if self.type in ("image_url", "file") else expected):
            article = "an" if self.type[0] in "aeiou" else "a"
            raise ValueError(f"{article} {self.type} part needs `{self.type}` "  # noqa: TRY004
                             f"({_JSON_TYPES[expected]})")  # pydantic's 400
        return self


_PARTS: TypeAdapter[list[ContentPart]] = TypeAdapter(list[ContentPart])


def _requires(role: str, *fields: str) -> dict[str, Any]:
    """JSON schema: a message of ``role`` has ``fields``, not null."""
    return {"if": {"properties": {"role": {"const": role}}, "required": ["role"]},
            "then": {"required": list(fields),
                     "properties": {f: {"not": {"type": "null"}} for f in fields}}}


MESSAGE_NEEDS: dict[str, tuple[str, ...]] = {
    "system": ("content",), "developer": ("content",), "user": ("content",),
    "tool": ("content", "tool_call_id"), "function": ("content", "name"),
}
"""What OpenAI requires of a message by role (an assistant's content is optional). LiteLLM
fails on some messages without them (two system turns without content: KeyError 'content'),
and reports that as a connection error, a 502, which also counts against the deployment."""


class ChatMessageIn(FewExtras):
    model_config = ConfigDict(extra="allow", strict=True, json_schema_extra={
        "allOf": [*(_requires(role, *fields) for role, fields in MESSAGE_NEEDS.items()),
                  {"if": {"properties": {"role": {"not": {"const": "assistant"}}}},
                   "then": {"properties": {"content": {"not": {
                       "type": "array", "contains": {"properties": {"type": {"const": "refusal"}},
                                                     "required": ["type"]}}}}}}]})
    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[bound.ToolCallIn] | None = None
    tool_call_id: bound.ToolCallId | None = None

    @model_validator(mode="after")
    def _has_what_its_role_needs(self) -> ChatMessageIn:
        missing = [f for f in MESSAGE_NEEDS.get(self.role, ()) if getattr(self, f) is None]
        if missing:
            raise ValueError(f"a {self.role} message needs `{missing[0]}`")
        if self.role != "assistant" and isinstance(self.content, list) \
                and any(part.type == "refusal" for part in self.content):
            raise ValueError("only an assistant message has refusal parts")
        return self

    @field_validator("content", mode="wrap")
    @classmethod
    def _parts_where_they_fail(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        """A list is validated as parts alone, so that an error names the part's field
        (``messages.0.content.1.file.file_id``), not the union's string branch."""
        return _PARTS.validate_python(value) if isinstance(value, list) else handler(value)


Messages = Annotated[list[ChatMessageIn], bound.PARTS_COUNTED]


class StreamOptions(FewExtras):
    model_config = ConfigDict(extra="allow")
    include_usage: bool | None = None


FORWARDED_FIELDS = frozenset({
    "messages", "model", "audio", "frequency_penalty", "logit_bias", "logprobs",
    "max_completion_tokens", "max_tokens", "metadata", "modalities", "moderation", "n",
    "parallel_tool_calls", "prediction", "presence_penalty", "prompt_cache_key",
    "prompt_cache_options", "prompt_cache_retention", "reasoning_effort", "response_format",
    "safety_identifier", "seed", "service_tier", "stop", "store", "stream", "stream_options",
    "temperature", "tool_choice", "tools", "top_logprobs", "top_p", "user", "verbosity",
    "web_search_options",
})
"""The OpenAI chat-completion fields (API reference; the bundled openai client's ``create``
but the legacy ``functions`` and ``function_call``): all that reaches the upstream."""


UpstreamParams: TypeAlias = dict[str, Any]
"""An admitted request as it goes to the upstream: only allow-listed top-level fields (the
LiteLLM call's keyword arguments); below them, the client's JSON as validated."""


def forwarded(body: dict[str, Any], also: Collection[str] = (),
              ) -> tuple[UpstreamParams, list[str]]:
    """The body's allow-listed fields (plus ``also``), and the names of those left out.

    ``metadata`` goes in ``extra_body``: LiteLLM reads its own ``metadata`` argument and would
    not send the client's to the upstream."""
    kept = {k: v for k, v in body.items() if k in FORWARDED_FIELDS or k in also}
    if "metadata" in kept and "metadata" not in also:
        kept["extra_body"] = {"metadata": kept.pop("metadata")}
    return kept, sorted(k for k in body if k not in FORWARDED_FIELDS and k not in also)


MAX_NAME_CHARS = 256
"""The longest model name a request may send (400 beyond: OpenAI's names are under 64
characters), and where a client's name is cut when echoed or recorded."""


def shown_name(name: str) -> str:
    """A client-given name (model, policy) as error messages and records show it: cut to
    ``MAX_NAME_CHARS``, so that a huge one cannot bloat an answer or the audit trail."""
    return name if len(name) <= MAX_NAME_CHARS else name[:MAX_NAME_CHARS] + "..."


class ChatCompletionRequest(FewExtras):
    """POST /v1/chat/completions. The OpenAI fields are type-checked here so a malformed one
    is the client's 400, not a failure inside LiteLLM that would look like the upstream's;
    other fields (at most ``MAX_EXTRA_BODY_FIELDS``) are allowed here and left out of the
    upstream call (``forwarded``)."""

    model_config = ConfigDict(extra="allow", strict=True)
    max_extra = MAX_EXTRA_BODY_FIELDS
    messages: Messages = Field(min_length=1, max_length=bound.MAX_MESSAGES)
    model: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    audio: dict[str, Any] | None = None
    frequency_penalty: bound.Penalty | None = None
    logit_bias: bound.LogitBias | None = None
    logprobs: bool | None = None
    max_completion_tokens: int | None = Field(None, ge=1)
    max_tokens: int | None = Field(None, ge=1)
    metadata: bound.Metadata | None = None
    modalities: bound.Modalities | None = None
    moderation: bound.Moderation | None = None
    n: bound.Choices | None = None
    parallel_tool_calls: bool | None = None
    prediction: dict[str, Any] | None = None
    presence_penalty: bound.Penalty | None = None
    prompt_cache_key: bound.PromptCacheKey | None = None
    prompt_cache_options: bound.PromptCacheOptions | None = None
    prompt_cache_retention: bound.PromptCacheRetention | None = None
    reasoning_effort: bound.Keyword | None = None
    response_format: dict[str, Any] | None = None
    safety_identifier: bound.SafetyIdentifier | None = None
    seed: bound.Seed | None = None
    service_tier: bound.Keyword | None = None
    stop: bound.Stop | None = None
    store: bool | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: bound.Temperature | None = None
    tool_choice: ToolMode | ToolChoice | None = None
    tools: list[Tool] | None = Field(None, max_length=MAX_TOOLS)
    top_logprobs: bound.TopLogprobs | None = None
    top_p: bound.TopP | None = None
    user: bound.User | None = None
    verbosity: bound.Verbosity | None = None
    web_search_options: bound.WebSearchOptions | None = None

    @field_validator("tool_choice", mode="wrap")
    @classmethod
    def _choice_where_it_fails(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        """Each form validated alone, so that an error names the field, not a union branch."""
        if isinstance(value, dict):
            return ToolChoice.model_validate(value)
        return TOOL_MODE.validate_python(value) if isinstance(value, str) else handler(value)

    @field_validator("messages")
    @classmethod
    def _few_media_parts(cls, messages: list[ChatMessageIn]) -> list[ChatMessageIn]:
        """At most ``MAX_MEDIA_PARTS`` image, audio and file parts; the first past it is named."""
        count = 0
        for turn, message in enumerate(messages):
            for index, part in enumerate(message.content if isinstance(message.content, list)
                                         else ()):
                count += part.type in ("image_url", "input_audio", "file")
                if count > MAX_MEDIA_PARTS:
                    raise ValidationError.from_exception_data("messages", [InitErrorDetails(
                        type=PydanticCustomError(
                            "too_many_parts",
                            "at most {limit} image, audio and file parts in one request",
                            {"limit": MAX_MEDIA_PARTS}),
                        loc=(turn, "content", index), input=part.type)])
        return messages


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
    """The one error envelope: every error the gateway answers is built from this model."""

    error: ErrorBody


def error_envelope(message: str, type: str, param: str | None = None,
                   code: str | None = None) -> dict[str, Any]:
    """``{"error": {"message", "type", "param", "code"}}``, built from ``ErrorResponse``."""
    return ErrorResponse(error=ErrorBody(message=message, type=type, param=param,
                                         code=code)).model_dump()


# --- vilmo additions (not part of the OpenAI API) -------------------------------------------

class Health(BaseModel):
    status: Literal["ok"] = "ok"
    policies: list[str] | None = None
    models: list[str] | None = None


class ValuesCheckRequest(BaseModel):
    """POST /v1/values/check: judge a text, or a conversation, without calling any model."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"anyOf": [
        {"required": ["text"], "properties": {"text": {"type": "string"}}},
        {"required": ["messages"], "properties": {"messages": {"type": "array", "minItems": 1}}},
    ]})  # the OpenAPI document states that ``check_values`` needs one of them
    text: str | None = Field(None, description="A reply to judge.")
    prompt: str | None = Field(None, description="The prompt that led to `text`, if any.")
    messages: Messages | None = Field(
        None, max_length=bound.MAX_MESSAGES, description="A conversation: judged as input as "
        "the chat route's input check reads it (every message of the policy's "
        "checks.input_roles), and the last turn, if the assistant's, as the reply.")
    policy: str | None = Field(None, description="A policy name (same rules as the header).")


class ValuesCheckResult(TypedDict):
    """The POST /v1/values/check reply."""

    object: Literal["vilmo.values.check"]
    policy: str
    guard: Literal["ok", "error"]
    action: str | None
    violations: list[str]
    input: dict[str, object] | None
    output: dict[str, object] | None
