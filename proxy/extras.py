"""A bound on the fields a client's JSON object may carry beyond those its model names.

OpenAI's chat objects allow fields the gateway does not declare (a provider's message
``cache_control``, a part's ``input_audio``, a body's ``allowed_params``): their models keep
them (``extra="allow"``), and before this bound an object could carry any number of them, each
parsed, validated and (in a message) forwarded. ``FewExtras`` refuses an object with more than
its ``max_extra`` undeclared fields: a 400 ``invalid_request`` whose ``param`` names the first
field past the bound (``messages.0.k8``).
"""

from __future__ import annotations

from typing import ClassVar, Self

from pydantic import BaseModel, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

MAX_EXTRA_FIELDS = 8
"""The most undeclared fields of a message, a content part or ``stream_options``: OpenAI's
and the providers' (``refusal``, ``audio``, ``function_call``, ``reasoning_content``,
``cache_control``, ``thinking_blocks``, ``input_audio``...) are a handful."""
MAX_EXTRA_BODY_FIELDS = 16
"""The most undeclared top-level fields of a chat request (dropped unless a model's
``allowed_params`` names them): the OpenAI ones the gateway does not declare
(``functions``, ``prompt_cache_key``, ``safety_identifier``, ``verbosity``...) are fewer."""
MAX_KEY_SHOWN = 64
"""Where the named field is cut in the error (the client chose its length)."""


class FewExtras(BaseModel):
    """A model whose undeclared fields are at most ``max_extra``."""

    max_extra: ClassVar[int] = MAX_EXTRA_FIELDS

    @model_validator(mode="after")
    def _few_extra_fields(self) -> Self:
        extra = self.model_extra
        if extra is not None and len(extra) > self.max_extra:
            key = list(extra)[self.max_extra]
            key = key if len(key) <= MAX_KEY_SHOWN else key[:MAX_KEY_SHOWN] + "..."
            raise ValidationError.from_exception_data(type(self).__name__, [InitErrorDetails(
                type=PydanticCustomError(
                    "too_many_fields", "at most {limit} fields beyond the declared ones",
                    {"limit": self.max_extra}),
                loc=(key,), input=key)])
        return self
