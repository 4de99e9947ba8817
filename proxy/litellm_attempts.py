"""Each attempt LiteLLM makes (a Router retry or fallback, or its only call), seen as it starts.

LiteLLM runs ``async_pre_call_deployment_hook`` once per attempt, after the Router has chosen
the deployment and filled in a wildcard deployment's model from the requested name, just
before the provider is called: the model, ``custom_llm_provider`` and model group here are
what the attempt will use. The gateway uses it twice:

- an attempt LiteLLM would make with an unbounded provider (``aiohttp_openai``:
  ``proxy.config_values.unbounded_provider``, or LiteLLM's own ``get_llm_provider`` naming
  it) fails at once, a 400 (``UnboundedModel``), before anything is sent: whatever routed it
  there (a wildcard deployment, an alias, a fallback's name);
- the attempt's model group is noted (``proxy.upstream_bounds.TARGET``, a context variable
  the attempt's HTTP requests read): a cut reply is known again by what a retry targets,
  never by the headers it is signed with.

Imported only where LiteLLM is (``proxy.litellm_clients.own_litellm_clients``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import litellm
from litellm.integrations.custom_logger import CustomLogger

from proxy.config_values import UNBOUNDED_PROVIDERS, unbounded_provider
from proxy.errors import InvalidRequest
from proxy.upstream_bounds import TARGET


class UnboundedModel(InvalidRequest):
    """A model LiteLLM would call outside the gateway's bounds on a reply: the client's 400."""


def refused(model: object, problem: str) -> UnboundedModel:
    """The 400 for the client's ``model``; None: the model LiteLLM would call is the config's
    (an alias's or fallback's target), not named to the client."""
    named = "the model LiteLLM would call" if model is None else f"the model {str(model)[:200]!r}"
    return UnboundedModel(f"{named} is not served on this gateway: {problem}", param="model",
                          code="invalid_request")


def provider_of(params: Mapping[str, Any]) -> str | None:
    """The provider LiteLLM calls ``params`` (an attempt's arguments) with, as ``litellm.main``
    reads it; None when it names none LiteLLM knows (the call then fails in LiteLLM)."""
    custom, api_base = params.get("custom_llm_provider"), params.get("api_base")
    try:
        return str(litellm.get_llm_provider(
            model=str(params.get("model", "")),
            custom_llm_provider=custom if isinstance(custom, str) else None,
            api_base=api_base if isinstance(api_base, str) else None)[1])
    except Exception:  # noqa: BLE001 - LiteLLM's BadRequestError: no provider, no call
        return None


def refuse_unbounded(params: Mapping[str, Any], name: object = None, *,
                     ask_litellm: bool = True) -> None:
    """Raise ``UnboundedModel`` (for the client's model ``name``, if given) when LiteLLM would
    call ``params`` with an unbounded client: by the config's rule (``unbounded_provider``,
    LiteLLM's own for that provider) and, when ``ask_litellm``, by LiteLLM's
    ``get_llm_provider`` too (about 30 us: once per attempt, not per deployment)."""
    problem = unbounded_provider(params)
    if problem is None and ask_litellm \
            and (provider := provider_of(params)) in UNBOUNDED_PROVIDERS:
        problem = unbounded_provider({"custom_llm_provider": provider})
    if problem is not None:
        raise refused(name, problem)


def model_group(kwargs: Mapping[str, Any]) -> str | None:
    """The model group LiteLLM's Router chose the attempt's deployment in (its metadata's
    ``model_group``), or None outside the Router."""
    for field in ("metadata", "litellm_metadata"):
        metadata = kwargs.get(field)
        if isinstance(metadata, Mapping) and metadata.get("model_group") is not None:
            return str(metadata["model_group"])
    return None


class EachAttempt(CustomLogger):
    """LiteLLM's per-attempt hook: refuses an unbounded provider, notes the model group."""

    async def async_pre_call_deployment_hook(self, kwargs: dict[str, Any],
                                             call_type: Any) -> dict[str, Any] | None:
        refuse_unbounded(kwargs)
        TARGET.set(model_group(kwargs))
        return None


def watch_attempts() -> None:
    """Register the hook, once per process (LiteLLM's callbacks are global)."""
    if not any(isinstance(callback, EachAttempt) for callback in litellm.callbacks):
        litellm.callbacks.append(EachAttempt())
