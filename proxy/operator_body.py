"""The operator's ``extra_body`` kept on every call that also forwards a client's fields in one.

The gateway sends a client's ``metadata`` (``proxy.protocol.forwarded``) and, to ``openai/``
models, its ``user`` (``LiteLLMUpstream.wire_params``) in the call's ``extra_body``. LiteLLM's
Router lays a request's arguments over the chosen deployment's ``litellm_params``, so that
``extra_body`` replaced the deployment's own wholesale: the operator's vLLM
``chat_template_kwargs``, guided decoding or ``safe_prompt`` were lost for every request with
``user`` or ``metadata``. Only LiteLLM knows which deployment it chose (several may serve one
name, each with its own ``extra_body``, and a fallback reaches others), so the two are merged
there, just before the call: LiteLLM's ``async_pre_call_deployment_hook`` sees the chosen
deployment's ``model_info.id``. The operator's keys win: a client's forwarded keys only add.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from litellm.integrations.custom_logger import CustomLogger

CONFIGURED: dict[str, dict[str, Any]] = {}
"""Each Router deployment's ``litellm_params.extra_body``, by its ``model_info.id`` (LiteLLM's
hash of the deployment, so one id never stands for two different bodies)."""


class KeepOperatorBody(CustomLogger):
    """Puts the chosen deployment's configured ``extra_body`` back over the call's."""

    async def async_pre_call_deployment_hook(self, kwargs: dict[str, Any],
                                             call_type: Any) -> dict[str, Any] | None:
        merged = with_operator_body(kwargs)
        return merged if merged is not kwargs else None


def with_operator_body(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with ``extra_body`` the call's (the client's forwarded keys, or the
    deployment's own when the request had none) under the configured one; ``kwargs`` itself
    when its deployment configures none."""
    info = kwargs.get("model_info")
    if not isinstance(info, Mapping):
        return kwargs
    configured = CONFIGURED.get(str(info.get("id"))) \
        or CONFIGURED.get(str(info.get("original_model_id")))
    if not configured:
        return kwargs
    sent = kwargs.get("extra_body")
    return {**kwargs, "extra_body": {**(sent if isinstance(sent, Mapping) else {}),
                                     **configured}}


def keep_operator_bodies(deployments: Iterable[Mapping[str, Any]]) -> None:
    """Notes the Router's deployments that configure ``extra_body`` and, when there are any,
    registers the hook (once per process: LiteLLM's callbacks are global). A config without
    one costs nothing: a request's ``extra_body`` then replaces nothing."""
    import litellm

    for deployment in deployments:
        body = (deployment.get("litellm_params") or {}).get("extra_body")
        model_id = (deployment.get("model_info") or {}).get("id")
        if model_id is None:
            continue
        if isinstance(body, Mapping) and body:
            CONFIGURED[str(model_id)] = dict(body)
        else:  # an id the config names itself may have lost its extra_body on a reload
            CONFIGURED.pop(str(model_id), None)
    if CONFIGURED and not any(isinstance(c, KeepOperatorBody) for c in litellm.callbacks):
        litellm.callbacks.append(KeepOperatorBody())
