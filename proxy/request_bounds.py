"""The bounds of a chat request's OpenAI fields (``proxy.protocol.ChatCompletionRequest``).

Each field that reaches the upstream is bounded here as OpenAI documents it, so that a value
no upstream takes (a 4,000-digit seed, a temperature of 1e308, a 5,000-character service
tier) is the client's 400 naming the field, not forwarded; and each list a client sizes is
bounded, so that one body of 120,000 tiny messages cannot hold a worker's event loop for
seconds in validation and token estimates.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)
from pydantic_core import PydanticCustomError

MAX_MESSAGES = 2048
"""The most messages one request may carry (a 400 naming ``messages`` beyond). Far above any
conversation a context window holds in useful turns; each message costs validation, the token
estimate of ``tpm`` keys, and the value check's reading."""

MAX_CONTENT_PARTS = 4096
"""The most content parts (text, image, audio, file) in all of one request's messages, counted
before they are validated: a part costs more to validate than a message, and 2,048 messages of
70 tiny parts each fit in 4 MiB (5 s of validation)."""

MAX_STOP = 4
"""OpenAI's limit on ``stop`` sequences."""

MAX_LOGIT_BIAS = 1024
"""The most tokens one ``logit_bias`` may bias (OpenAI documents no count; 300 is typical)."""

MAX_TOP_LOGPROBS = 20
"""OpenAI's limit on ``top_logprobs``."""

MAX_N = 128
"""OpenAI's limit on ``n``; the server's ``max_n`` (default 8) is checked at admission."""

MAX_USER_CHARS = 256
"""The longest ``user`` (an end user's id; OpenAI's are hashes of 64 characters)."""

MAX_TOOL_CALL_ID_CHARS = 256
"""The longest ``tool_call_id`` of a message, and ``id`` of a tool call in one: OpenAI's are
about 30-40 characters (``call_`` and 24 letters and digits), other providers' under 100. An id
that is no id shape is counted and read as text (``proxy.token_estimate.sent_strings``,
``proxy.inputs``); this bounds how much a client can put there at all."""

MAX_METADATA_PAIRS, MAX_METADATA_KEY_CHARS, MAX_METADATA_VALUE_CHARS = 16, 64, 512
"""OpenAI's limits on ``metadata``."""

Seed = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
"""``seed``: a 64-bit integer, as every upstream reads it."""

Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]
"""``frequency_penalty`` and ``presence_penalty``."""

Temperature = Annotated[float, Field(ge=0.0, le=2.0)]
TopP = Annotated[float, Field(ge=0.0, le=1.0)]
TopLogprobs = Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS)]
Choices = Annotated[int, Field(ge=1, le=MAX_N)]
Bias = Annotated[float, Field(ge=-100.0, le=100.0)]
"""One ``logit_bias`` value: OpenAI's range."""

Keyword = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]
"""``service_tier`` and ``reasoning_effort``: a short lower-case word (``auto``, ``flex``,
``priority``, ``minimal``, ``high``, ...). Not a fixed list: OpenAI adds values (``none``,
``xhigh``) that an upstream should be asked, not the gateway."""

Modality = Literal["text", "audio"]
Modalities = Annotated[list[Modality], Field(max_length=2)]
LogitBias = Annotated[dict[str, Bias], Field(max_length=MAX_LOGIT_BIAS)]
Metadata = Annotated[dict[Annotated[str, Field(max_length=MAX_METADATA_KEY_CHARS)],
                          Annotated[str, Field(max_length=MAX_METADATA_VALUE_CHARS)]],
                     Field(max_length=MAX_METADATA_PAIRS)]
User = Annotated[str, Field(max_length=MAX_USER_CHARS)]

MAX_SAFETY_IDENTIFIER_CHARS = 128
"""OpenAI's limit on ``safety_identifier`` (a hash of an end user's id)."""
MAX_PROMPT_CACHE_KEY_CHARS = 512
"""The longest ``prompt_cache_key`` (OpenAI documents none; a key names a tenant or a prompt)."""
MAX_LOCATION_CHARS = 128
"""The longest value of ``web_search_options.user_location.approximate`` (a city, a region, a
country code, a time zone) and of ``moderation.model`` (a model name)."""

SafetyIdentifier = Annotated[str, Field(max_length=MAX_SAFETY_IDENTIFIER_CHARS)]
PromptCacheKey = Annotated[str, Field(max_length=MAX_PROMPT_CACHE_KEY_CHARS)]
PromptCacheRetention = Literal["in_memory", "24h"]
Verbosity = Literal["low", "medium", "high"]
_Place = Annotated[str, Field(max_length=MAX_LOCATION_CHARS)]


class _Fixed(BaseModel):
    """An object the API defines whole: its fields typed strictly, no others (a field OpenAI
    adds later is refused, not forwarded unread)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class ApproximateLocation(_Fixed):
    city: _Place | None = None
    country: _Place | None = None
    region: _Place | None = None
    timezone: _Place | None = None


class UserLocation(_Fixed):
    type: Literal["approximate"]
    approximate: ApproximateLocation


class WebSearchOptions(_Fixed):
    """``web_search_options``, as the openai client types it."""

    search_context_size: Verbosity | None = None
    user_location: UserLocation | None = None


class ModerationMode(_Fixed):
    mode: Literal["score", "block"]


class ModerationPolicy(_Fixed):
    input: ModerationMode | None = None
    output: ModerationMode | None = None


class Moderation(_Fixed):
    """``moderation``, as the openai client types it."""

    model: _Place
    policy: ModerationPolicy | None = None


class PromptCacheOptions(_Fixed):
    """``prompt_cache_options``, as the openai client types it."""

    mode: Literal["implicit", "explicit"] | None = None
    ttl: Literal["30m"] | None = None
ToolCallId = Annotated[str, Field(max_length=MAX_TOOL_CALL_ID_CHARS)]


def _tool_call_id_bounded(call: dict[str, Any]) -> dict[str, Any]:
    """A tool call (otherwise free-form) whose ``id``, where it is a string, is at most
    ``MAX_TOOL_CALL_ID_CHARS``."""
    value = call.get("id")
    if isinstance(value, str) and len(value) > MAX_TOOL_CALL_ID_CHARS:
        raise PydanticCustomError("string_too_long",
                                  "a tool call's id has at most {max_length} characters",
                                  {"max_length": MAX_TOOL_CALL_ID_CHARS})
    return call


ToolCallIn = Annotated[dict[str, Any], AfterValidator(_tool_call_id_bounded)]
"""A message's tool call: free-form but for the length of its ``id``."""


StopSequences = Annotated[list[str], Field(max_length=MAX_STOP)]
_STOP_LIST: TypeAdapter[list[str]] = TypeAdapter(StopSequences, config=ConfigDict(strict=True))


def _stop_where_it_fails(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """A list is validated as a list alone, so that an error names ``stop`` (or its item),
    not the union's string branch."""
    return _STOP_LIST.validate_python(value) if isinstance(value, list) else handler(value)


Stop = Annotated[str | StopSequences, WrapValidator(_stop_where_it_fails)]
"""``stop``: one sequence or a list of at most ``MAX_STOP``."""


def few_content_parts(messages: Any) -> Any:
    """``messages`` before validation: at most ``MAX_CONTENT_PARTS`` parts in all (a 400
    naming ``messages``); anything else is left to the schema."""
    if isinstance(messages, list):
        parts = sum(len(m["content"]) for m in messages[:MAX_MESSAGES + 1]
                    if isinstance(m, dict) and isinstance(m.get("content"), list))
        if parts > MAX_CONTENT_PARTS:
            raise PydanticCustomError("too_many_parts",
                                      "at most {limit} content parts in all messages",
                                      {"limit": MAX_CONTENT_PARTS})
    return messages


PARTS_COUNTED = BeforeValidator(few_content_parts)
"""On ``messages``: ``few_content_parts`` before the messages are validated."""
