"""LiteLLM's ``aiohttp_openai/`` provider is refused at config load (``proxy.config_values``).

It calls with aiohttp itself, past the httpx clients whose hooks bound a reply on the Router
path (``proxy.upstream_bounds``). Before the fix such a model was served unbounded (a one-off
probe against a stub upstream, 2026-12-01): a 10 KB reply was read whole under
``upstream.max_response_bytes: 4096`` (the direct path: a 502 ``upstream_too_large``), and a
reply trickled over 5.3 s came back a 200 under a 1 s timeout (the direct path: a 504).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from proxy.errors import Redactor
from proxy.settings import ConfigError, GatewayConfig, load_config
from proxy.upstream import LiteLLMUpstream

STUB = 'api_base: "http://127.0.0.1:9/v1", api_key: sk-up-0123'


def loaded(tmp_path: Path, text: str) -> GatewayConfig:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    return load_config(path)


@pytest.mark.parametrize("params", [
    "model: aiohttp_openai/gpt-4o-mini",
    "model: aiohttp_openai/*",
    "model: openai/gpt-4o-mini, custom_llm_provider: aiohttp_openai",
])
def test_an_aiohttp_model_is_refused_at_config_load(tmp_path: Path, params: str) -> None:
    with pytest.raises(ConfigError) as caught:
        loaded(tmp_path, "model_list:\n  - model_name: fast\n"
                         f"    litellm_params: {{{params}, {STUB}}}\n")
    text = str(caught.value)
    assert "model_list.0.litellm_params" in text
    assert "aiohttp_openai" in text and "openai/" in text  # what to use instead


def test_an_aiohttp_default_for_every_deployment_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        loaded(tmp_path, "model_list:\n  - model_name: fast\n"
                         f"    litellm_params: {{model: openai/gpt-4o-mini, {STUB}}}\n"
                         "router_settings: {default_litellm_params: "
                         "{custom_llm_provider: aiohttp_openai}}\n")
    assert "router_settings.default_litellm_params" in str(caught.value)


def test_the_router_refuses_an_aiohttp_model_built_without_the_config_check() -> None:
    """A config validated but not loaded (``model_validate``: no resolved-value checks) still
    never reaches an unbounded client."""
    config = GatewayConfig.model_validate({"model_list": [{"model_name": "fast", "litellm_params": {
        "model": "aiohttp_openai/gpt-4o-mini", "api_base": "http://127.0.0.1:9/v1"}}]})
    with pytest.raises(ValueError, match="aiohttp_openai"):
        LiteLLMUpstream(config.model_list, config.router_settings, Redactor())


def test_openai_models_are_still_loaded(tmp_path: Path) -> None:
    config = loaded(tmp_path, "model_list:\n  - model_name: fast\n"
                              f"    litellm_params: {{model: openai/aiohttp_openai, {STUB}}}\n")
    params: dict[str, Any] = config.model_list[0].litellm_params
    assert params["model"] == "openai/aiohttp_openai"  # a model's own name may say anything
