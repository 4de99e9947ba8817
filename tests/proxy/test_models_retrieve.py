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
