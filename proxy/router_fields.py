"""The OpenAI fields the Router path sends only to OpenAI-compatible deployments.

``safety_identifier``, ``prompt_cache_key``, ``verbosity``, ``web_search_options`` and the
like (``OPENAI_ONLY``) are OpenAI's: LiteLLM refuses some it does not know for an ``openai/``
model (``verbosity``: its ``UnsupportedParamsError``), and maps or sends others to other
providers, switching on their features (``web_search_options`` becomes Anthropic's paid
``web_search`` server tool) or breaking the call. Which deployment an attempt reaches is
known only inside LiteLLM (several deployments may serve one name; a fallback reaches
others), so the fields travel in LiteLLM's own ``metadata`` (never sent to a provider) and
the per-attempt hook (``OpenAIOnlyFields``) puts them in the call's ``extra_body`` when the
attempt's provider is ``openai`` (as the direct path sends them), and drops them otherwise
(as before they were forwarded). ``user`` goes the same way to an ``openai/`` deployment
(LiteLLM sends it only to models in OpenAI's own catalog); other providers get it as
LiteLLM maps it (Anthropic's ``metadata.user_id``). Under the configured ``extra_body``: the
operator's keys win (``proxy.operator_body``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import litellm
from litellm.integrations.custom_logger import CustomLogger

from proxy.litellm_attempts import provider_of

OPENAI_ONLY = ("moderation", "prompt_cache_key", "prompt_cache_options",
               "prompt_cache_retention", "safety_identifier", "verbosity", "web_search_options")
CARRIER = "vilmo_openai_only"
"""The key of LiteLLM's ``metadata`` the fields travel under, from the call to its attempts."""
METADATA_FIELDS = ("metadata", "litellm_metadata")


def carried(params: dict[str, Any]) -> dict[str, Any]:
    """A Router call's arguments with the ``OPENAI_ONLY`` fields moved into ``metadata``."""
    moved = {name: params[name] for name in OPENAI_ONLY if name in params}
    if not moved:
        return params
    wired = {k: v for k, v in params.items() if k not in moved}
    metadata = params.get("metadata")
    wired["metadata"] = {**(metadata if isinstance(metadata, Mapping) else {}), CARRIER: moved}
    return wired


def openai_compatible(kwargs: Mapping[str, Any]) -> bool:
    """Whether an attempt (its arguments, the deployment's filled in) calls LiteLLM's
    ``openai`` provider: an OpenAI-compatible API that takes OpenAI's fields as they are."""
    return provider_of(kwargs) == "openai"


def for_attempt(kwargs: dict[str, Any]) -> dict[str, Any]:
    """An attempt's arguments with the carried fields (and ``user``) in ``extra_body`` for an
    OpenAI-compatible deployment, else the carried fields dropped; ``kwargs`` itself when
    there is nothing to change. The arguments are copied, never changed: a fallback's
    attempt may share them."""
    fields: dict[str, Any] = {}
    out = kwargs
    for name in METADATA_FIELDS:
        metadata = kwargs.get(name)
        if isinstance(metadata, Mapping) and CARRIER in metadata:
            carried_here = metadata[CARRIER]
            fields.update(carried_here if isinstance(carried_here, Mapping) else {})
            out = {**out, name: {k: v for k, v in metadata.items() if k != CARRIER}}
    if not fields and "user" not in kwargs:
        return out
    if not openai_compatible(kwargs):
        return out
    if "user" in out:
        out = dict(out)
        fields["user"] = out.pop("user")
    sent = out.get("extra_body")
    return {**out, "extra_body": {**fields, **(sent if isinstance(sent, Mapping) else {})}}


class OpenAIOnlyFields(CustomLogger):
    """LiteLLM's per-attempt hook: the carried fields sent or dropped by the provider."""

    async def async_pre_call_deployment_hook(self, kwargs: dict[str, Any],
                                             call_type: Any) -> dict[str, Any] | None:
        changed = for_attempt(kwargs)
        return changed if changed is not kwargs else None


def send_openai_only_fields_per_attempt() -> None:
    """Register the hook, once per process (LiteLLM's callbacks are global)."""
    if not any(isinstance(callback, OpenAIOnlyFields) for callback in litellm.callbacks):
        litellm.callbacks.append(OpenAIOnlyFields())
