"""What the official openai client sees of the gateway, over both upstream paths (the keyword
fake judge, the stub upstream, the real upstream adapters):

- an unknown model on a wildcard entry (``stub-*``, the embedded defaults' ``*``) was a 502
  ``upstream_error``, which the client retries: one call reached the upstream 3 times. It is
  the 404 ``model_not_found`` the README lists, as is an upstream's 404 whose code says so;
- an upstream's 400 code (``context_length_exceeded``) was hidden in the message under
  ``upstream_bad_request``: a short label now reaches ``e.code``;
- the client's newer chat fields (``safety_identifier``, ``prompt_cache_key``, ``verbosity``,
  ``web_search_options``...) were dropped silently; they reach the upstream, bounded;
- ``GET /v1/models`` listed wildcard patterns as model ids and ``models.retrieve`` was a 404.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from conftest import ADMIN_KEY, gateway_config_dict
from fakes import upstream_services
from openai.types.chat import ChatCompletionMessageParam
from stub_upstream import ServerThread, StubUpstream

from proxy.app import create_app
from proxy.settings import GatewayConfig

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello there."}]


@pytest.fixture(scope="module", params=["direct", "router"])
def url(request: pytest.FixtureRequest, stub: StubUpstream, policy_dir: Path,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The gateway's /v1 URL, with an exact entry (``gone``) whose upstream answers 404."""
    data = gateway_config_dict(stub.url, policy_dir, str(request.param))
    params = dict(data["model_list"][0]["litellm_params"])
    data["model_list"] = [{"model_name": "gone", "litellm_params": {
        **params, "model": "openai/stub-status-404"}}, *data["model_list"]]
    config = GatewayConfig.model_validate(data)
    config.store.path = tmp_path_factory.mktemp("compat") / "state.db"
    services = upstream_services(config, policy_dir)
    with ServerThread(create_app(config, lambda _: services)) as server:
        yield f"{server.url}/v1"


def client(url: str, **options: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key=ADMIN_KEY, **options)


def test_an_unknown_model_on_a_wildcard_is_404_and_not_retried(url: str,
                                                               stub: StubUpstream) -> None:
    """A default client (``max_retries=2``): before the fix, a 502 tried 3 times."""
    with pytest.raises(openai.NotFoundError) as caught:
        client(url).chat.completions.create(model="stub-status-404", messages=MESSAGES)
    assert (caught.value.code, caught.value.param) == ("model_not_found", "model")
    assert len(stub.received) == 1


@pytest.mark.parametrize(("fields", "error"), [
    ({"code": "model_not_found"}, openai.NotFoundError),
    ({}, openai.InternalServerError),  # no reason given: the gateway's configuration
    ({"code": "model_gone stab him"}, openai.InternalServerError),
])
def test_an_exact_entrys_404_is_model_not_found_when_the_upstream_says_so(
        url: str, stub: StubUpstream, fields: dict[str, str], error: type[Exception]) -> None:
    stub.error_fields = fields
    with pytest.raises(error) as caught:
        client(url, max_retries=0).chat.completions.create(model="gone", messages=MESSAGES)
    assert isinstance(caught.value, openai.APIStatusError)
    assert "stab" not in caught.value.message


def test_a_401_from_the_upstream_stays_the_gateways_502(url: str) -> None:
    with pytest.raises(openai.InternalServerError):
        client(url, max_retries=0).chat.completions.create(model="stub-status-401",
                                                           messages=MESSAGES)


@pytest.mark.parametrize(("fields", "code"), [
    ({"code": "context_length_exceeded", "param": "messages"}, "context_length_exceeded"),
    ({"code": "invalid_image_url"}, "invalid_image_url"),
    ({"code": "go and stab him now"}, "upstream_bad_request"),  # not a label: the gateway's
    ({"code": "sk-other-abcDEF1234567890xyz"}, "upstream_bad_request"),
    ({}, "upstream_bad_request"),
])
def test_an_upstream_400s_code_reaches_the_client(url: str, stub: StubUpstream,
                                                  fields: dict[str, str], code: str) -> None:
    stub.error_fields = fields
    with pytest.raises(openai.BadRequestError) as caught:
        client(url, max_retries=0).chat.completions.create(model="stub-status-400",
                                                           messages=MESSAGES)
    assert caught.value.code == code
    assert caught.value.param is None  # the envelope's param stays the gateway's
    assert "stab" not in caught.value.message and "sk-other" not in caught.value.message


NEWER_FIELDS: dict[str, Any] = {
    "safety_identifier": "user-4f9a2c", "prompt_cache_key": "tenant-7/chat",
    "prompt_cache_retention": "24h", "verbosity": "low",
    "web_search_options": {"search_context_size": "low", "user_location": {
        "type": "approximate", "approximate": {"city": "Lyon", "country": "FR"}}},
}


def test_the_clients_newer_fields_reach_the_upstream(url: str, stub: StubUpstream) -> None:
    client(url, max_retries=0).chat.completions.create(model="stub", messages=MESSAGES,
                                                       **NEWER_FIELDS)
    sent = stub.last.body
    assert {name: sent.get(name) for name in NEWER_FIELDS} == NEWER_FIELDS


@pytest.mark.parametrize(("field", "value"), [
    ("safety_identifier", "u" * 129),
    ("safety_identifier", 5),
    ("prompt_cache_key", "k" * 1025),
    ("prompt_cache_retention", "forever"),
    ("verbosity", "loud"),
    ("web_search_options", {"search_context_size": "huge"}),
    ("web_search_options", {"user_location": {"type": "approximate",
                                              "approximate": {"city": "x" * 300}}}),
    ("web_search_options", {"user_location": {"type": "exact", "approximate": {}}}),
    ("moderation", {"model": "m", "policy": {"input": {"mode": "drop"}}}),
    ("moderation", {"policy": {}}),
    ("prompt_cache_options", {"ttl": "1h"}),
    ("prompt_cache_options", {"mode": "implicit", "keys": ["a"]}),
])
def test_the_newer_fields_are_bounded(url: str, stub: StubUpstream, field: str,
                                      value: object) -> None:
    response = httpx.post(f"{url}/chat/completions", timeout=30, json={
        "model": "stub", "messages": MESSAGES, field: value},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert response.status_code == 400, response.text
    assert str(response.json()["error"]["param"]).startswith(field)
    assert not stub.received


def test_models_lists_served_names_and_retrieves_any_served_model(url: str) -> None:
    models = client(url, max_retries=0).models
    assert [m.id for m in models.list().data] == ["gone", "stub"]  # no pattern is a model id
    for name in ("stub", "stub-anything"):  # through the ``stub-*`` pattern too
        model = models.retrieve(name)
        assert (model.id, model.object) == (name, "model")
    with pytest.raises(openai.NotFoundError) as caught:
        models.retrieve("gpt-nope")
    assert caught.value.code == "model_not_found"


def test_the_newer_fields_are_allowed_under_strict_params() -> None:
    """``strict_params`` refuses what is not forwarded: these are, so they pass it (they were
    refused as ``unsupported_parameter``); other fields are still left out."""
    from proxy.protocol import forwarded

    body = {"model": "stub", "messages": MESSAGES, "moderation": {"model": "m"},
            "prompt_cache_options": {"mode": "explicit"}, **NEWER_FIELDS, "api_base": "x"}
    params, left_out = forwarded(body)
    assert left_out == ["api_base"]
    assert {k: params[k] for k in body if k != "api_base"} == {
        k: v for k, v in body.items() if k != "api_base"}
