"""Which upstream 400 ``code``s reach the client as the envelope's ``code``, and the 400s that
LiteLLM (the gateway's own client on the Router path) raises itself, before any call.

A client branches on ``code``: an upstream's must never read as one the gateway itself gives
(``content_filter``, ``invalid_api_key``, ``rate_limit_exceeded``, ``model_not_found``,
``policy_not_found``) nor carry an upstream's internal names. Only OpenAI's own 400 codes
(``OPENAI_400_CODES``) pass; any other stays ``upstream_bad_request`` (the message still names
a vetted label, ``proxy.upstream_hints.error_label``).
"""

from __future__ import annotations

import re

from proxy.protocol import FORWARDED_FIELDS

OPENAI_400_CODES = frozenset({
    "array_above_max_length", "array_below_min_length", "context_length_exceeded",
    "decimal_above_max_value", "decimal_below_min_value", "empty_array", "image_parse_error",
    "integer_above_max_value", "integer_below_min_value", "invalid_image",
    "invalid_image_format", "invalid_image_url", "invalid_prompt", "invalid_type", "invalid_value",
    "missing_required_parameter", "string_above_max_length", "string_below_min_length",
    "unknown_parameter", "unsupported_parameter", "unsupported_value",
})
"""OpenAI's chat-completion 400 codes (as its API answers them) passed on as they are
(``invalid_prompt``: a prompt flagged under its usage policy, review mr9)."""


def passed_code(label: str | None) -> str | None:
    """An upstream 400's vetted code as the envelope's ``code``, or None (the gateway's own)."""
    return label if label in OPENAI_400_CODES else None


REFUSED_PARAMS = re.compile(r"does not support parameters: \[([^\]]{0,2000})\]")
"""LiteLLM's ``UnsupportedParamsError`` message, naming the fields it would not send."""


def litellm_refused(exc: BaseException, model: str) -> tuple[str, str | None] | None:
    """The gateway's own 400 (its message, and the field it names) for a request LiteLLM
    refused before any call (``UnsupportedParamsError``: a field it says the provider does not
    take), or None for any other error (the upstream's own answer)."""
    from litellm.exceptions import UnsupportedParamsError

    if not isinstance(exc, UnsupportedParamsError):
        return None
    found = REFUSED_PARAMS.search(str(getattr(exc, "message", "") or exc))
    names = sorted({name.strip(" '\"") for name in found.group(1).split(",")} & FORWARDED_FIELDS
                   ) if found else []
    message = (f"the gateway cannot send {', '.join(names) or 'a field of the request'} to "
               f"the model {model!r}: its client for that model's provider (LiteLLM) refused "
               "it as unsupported; nothing was sent upstream")
    return message, names[0] if names else None
