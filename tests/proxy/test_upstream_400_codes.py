"""An upstream's 400 ``code`` reaches the envelope's ``code`` only when it is one of OpenAI's
own (``proxy.upstream_codes``): it passed any short identifier, so an upstream could answer
with a code the gateway itself gives (``content_filter``, ``invalid_api_key``,
``rate_limit_exceeded``, ``model_not_found``, ``policy_not_found``) or with its internal names,
and a client branching on ``code`` was misled. Both upstream paths."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from conftest import ADMIN_KEY, gateway_config_dict
from fakes import upstream_services
from stub_upstream import ServerThread, StubUpstream

from proxy.app import create_app
from proxy.settings import GatewayConfig


@pytest.fixture(scope="module", params=["direct", "router"])
def client(request: pytest.FixtureRequest, stub: StubUpstream, policy_dir: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    config = GatewayConfig.model_validate(
        gateway_config_dict(stub.url, policy_dir, str(request.param)))
    config.store.path = tmp_path_factory.mktemp("codes") / "state.db"
    services = upstream_services(config, policy_dir)
    with ServerThread(create_app(config, lambda _: services)) as server:
        yield openai.OpenAI(base_url=f"{server.url}/v1", api_key=ADMIN_KEY, max_retries=0)


def code_for(client: openai.OpenAI, stub: StubUpstream, upstream_code: str) -> object:
    stub.error_fields = {"code": upstream_code}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="stub-status-400",
                                       messages=[{"role": "user", "content": "hi"}])
    return caught.value.code


@pytest.mark.parametrize("upstream_code", [
    "content_filter", "invalid_api_key", "policy_not_found", "rate_limit_exceeded",
    "model_not_found", "payload_too_large", "tenant_acme_prod", "upstream_error"])
def test_a_code_not_openais_stays_upstream_bad_request(
        client: openai.OpenAI, stub: StubUpstream, upstream_code: str) -> None:
    assert code_for(client, stub, upstream_code) == "upstream_bad_request"


@pytest.mark.parametrize("upstream_code", [
    "context_length_exceeded", "invalid_image_url", "invalid_value", "string_above_max_length",
    "unsupported_value", "invalid_prompt"])
def test_openais_own_400_codes_are_passed_on(
        client: openai.OpenAI, stub: StubUpstream, upstream_code: str) -> None:
    assert code_for(client, stub, upstream_code) == upstream_code
