"""``GET /v1/models/{model}`` says yes only to a name the chat route would take: it answered
200 for a name over chat's 256 characters and for the config's pattern itself (``stub-*``),
neither of which is a model. ``GET /v1/models/`` (no id) is the list, not a 404."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from conftest import ADMIN_KEY, TEAM_KEY, gateway_config_dict
from fakes import upstream_services
from stub_upstream import ServerThread, StubUpstream

from proxy.app import create_app
from proxy.protocol import MAX_NAME_CHARS
from proxy.settings import GatewayConfig


@pytest.fixture(scope="module")
def url(stub: StubUpstream, policy_dir: Path,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    config = GatewayConfig.model_validate(gateway_config_dict(stub.url, policy_dir))
    config.store.path = tmp_path_factory.mktemp("retrieve") / "state.db"
    services = upstream_services(config, policy_dir)
    with ServerThread(create_app(config, lambda _: services)) as server:
        yield f"{server.url}/v1"


@pytest.mark.parametrize("name", ["stub-" + "x" * MAX_NAME_CHARS, "stub-*", "stub-?", "stub-[a]"])
def test_a_name_chat_refuses_or_a_pattern_is_no_model(url: str, name: str) -> None:
    models = openai.OpenAI(base_url=url, api_key=TEAM_KEY, max_retries=0).models
    with pytest.raises(openai.NotFoundError) as caught:
        models.retrieve(name)
    assert caught.value.code == "model_not_found"


def test_the_longest_name_chat_takes_is_still_retrieved(url: str) -> None:
    name = ("stub-" + "x" * MAX_NAME_CHARS)[:MAX_NAME_CHARS]
    models = openai.OpenAI(base_url=url, api_key=TEAM_KEY, max_retries=0).models
    assert models.retrieve(name).id == name


def test_no_id_is_the_list(url: str) -> None:
    listed = httpx.get(f"{url}/models", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    response = httpx.get(f"{url}/models/", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert response.status_code == 200 and listed.status_code == 200
    assert response.json() == listed.json()
    assert response.json()["object"] == "list"


def test_an_entry_named_with_a_patterns_characters_is_retrieved(
        stub: StubUpstream, policy_dir: Path, tmp_path: Path) -> None:
    """review mr9: ``llama-8b[fp8]`` is listed and served by chat, but retrieve said 404."""
    raw = gateway_config_dict(stub.url, policy_dir)
    raw["model_list"].append({"model_name": "llama-8b[fp8]",
                              "litellm_params": dict(raw["model_list"][0]["litellm_params"])})
    config = GatewayConfig.model_validate(raw)
    config.store.path = tmp_path / "state.db"
    services = upstream_services(config, policy_dir)
    with ServerThread(create_app(config, lambda _: services)) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=TEAM_KEY, max_retries=0)
        assert "llama-8b[fp8]" in [m.id for m in client.models.list()]
        assert client.models.retrieve("llama-8b[fp8]").id == "llama-8b[fp8]"
