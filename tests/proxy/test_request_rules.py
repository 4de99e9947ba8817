"""Regressions of what schemathesis and the upstream fault suite found (issue 16), in the fast
tier: the gateway in process with fakes behind its seams.

Before the fixes: a message without the fields OpenAI requires of its role, or a content part
without its field, went on to LiteLLM, which failed on some of them inside its own code and
reported a connection error (502, counted against the deployment); ``since=nan`` filtered the
audit trail to nothing with a 200; LiteLLM's advice to operators (which model groups have
fallbacks) reached clients in error messages; and the OpenAPI document had no request bodies
and promised 422s the gateway never sends.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fakes import FakeUpstream, MemoryAudit, app_with, fake_services, post_chat

from proxy.errors import Redactor, UpstreamFailed, map_upstream_errors
from proxy.outcome import Facts
from proxy.protocol import MAX_NAME_CHARS, shown_name
from proxy.record import build_record
from proxy.summary import parse_instant
from vilmo.instruct.principles import PrincipleBank


def chat(policy_dir: Path, bank: PrincipleBank, messages: list[dict[str, Any]],
         ) -> tuple[httpx.Response, FakeUpstream]:
    upstream = FakeUpstream()
    services = fake_services(policy_dir, bank, upstream)
    response = asyncio.run(post_chat(services, {"model": "stub", "messages": messages}))
    return response, upstream


@pytest.mark.parametrize("messages, param, needs", [
    ([{"role": "system"}, {"role": "developer"}, {"role": "user", "content": "Hi."}],
     "messages.0", "content"),
    ([{"role": "user", "content": None}], "messages.0", "content"),
    ([{"role": "user", "content": "Hi."}, {"role": "tool", "content": "42"}], "messages.1",
     "tool_call_id"),
    ([{"role": "function", "content": "42"}], "messages.0", "name"),
    # the part itself is named, not the union's string branch ("content.str")
    ([{"role": "user", "content": [{"type": "file"}]}], "messages.0.content.0", "`file`"),
    ([{"role": "user", "content": [{"type": "input_audio", "input_audio": "x"}]}],
     "messages.0.content.0", "`input_audio`"),
    ([{"role": "user", "content": [{"type": "refusal", "refusal": "no"}]}], "messages.0",
     "refusal"),
])
def test_a_message_without_what_its_role_needs_is_a_400(
        policy_dir: Path, bank: PrincipleBank, messages: list[dict[str, Any]], param: str,
        needs: str) -> None:
    response, upstream = chat(policy_dir, bank, messages)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and needs in error["message"]
    assert upstream.calls == []


@pytest.mark.parametrize("messages", [
    [{"role": "user", "content": "Hi."}],
    [{"role": "user", "content": [{"type": "text", "text": "Hi."},
                                  {"type": "image_url", "image_url": {"url": "data:,"}}]}],
    [{"role": "user", "content": "Hi."},
     {"role": "assistant", "content": None, "tool_calls": [
         {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
     {"role": "tool", "content": "42", "tool_call_id": "c1"},
     {"role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]},
     {"role": "user", "content": "Why?"}],
])
def test_messages_as_openai_defines_them_pass(policy_dir: Path, bank: PrincipleBank,
                                              messages: list[dict[str, Any]]) -> None:
    response, upstream = chat(policy_dir, bank, messages)
    assert response.status_code == 200, response.text
    assert len(upstream.calls) == 1


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "1e999"])
def test_times_that_are_not_finite_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="finite"):
        parse_instant(text)
    assert parse_instant("1796000000.5") == 1796000000.5


def test_litellms_advice_to_operators_is_cut_from_upstream_messages(
        caplog: pytest.LogCaptureFixture) -> None:
    """The upstream's message is in the gateway's log only, without LiteLLM's advice."""
    import httpx2  # the openai package's HTTP client

    request = httpx2.Request("POST", "http://upstream/v1/chat/completions")
    advice = ("Incorrect API key provided: sk-x\n\nLiteLLM: model group 'a' failed with the "
              "error above. Fallbacks are configured for: primary, backup.")
    upstream_error = openai.InternalServerError(
        advice, response=httpx2.Response(500, request=request), body=None)
    with (caplog.at_level(logging.WARNING, logger="proxy.errors"),
          pytest.raises(UpstreamFailed) as mapped, map_upstream_errors(Redactor(), "a")):
        raise upstream_error
    assert mapped.value.message == "the upstream for model 'a' failed (status 500)"
    assert [r.getMessage() for r in caplog.records if r.name == "proxy.errors"] == [
        "the upstream for model 'a' failed (status 500): Incorrect API key provided: sk-x"]


def test_the_openapi_document_describes_bodies_and_errors(policy_dir: Path,
                                                          bank: PrincipleBank) -> None:
    document = app_with(fake_services(policy_dir, bank)).openapi()
    schemas = document["components"]["schemas"]
    for path, model in (("/v1/chat/completions", "ChatCompletionRequest"),
                        ("/v1/values/check", "ValuesCheckRequest")):
        body = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        assert body["schema"]["$ref"] == f"#/components/schemas/{model}"
        assert "messages" in schemas[model]["properties"]
    assert "ChatMessageIn" in schemas and "HTTPValidationError" not in schemas
    error_ref = {"$ref": "#/components/schemas/ErrorResponse"}
    for operations in document["paths"].values():
        for operation in operations.values():
            assert "422" not in operation["responses"]
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    assert response["content"] == {"application/json": {"schema": error_ref}}
    chat_body = schemas["ChatCompletionRequest"]["properties"]
    assert {"type": "integer", "minimum": 1, "maximum": 8} in chat_body["n"]["anyOf"]


def test_a_huge_model_name_is_a_400_and_no_name_bloats_an_answer_or_a_record(
        policy_dir: Path, bank: PrincipleBank) -> None:
    """The reviewer's case: a 3,000,000-character model name was answered by a 3 MB 404 and
    recorded whole (a 6 MB audit record; the embedded sink keeps 1,000)."""
    services = fake_services(policy_dir, bank)
    huge = "m" * 3_000_000
    response = asyncio.run(post_chat(services, {"model": huge, "messages": [
        {"role": "user", "content": "Hi."}]}))
    assert response.status_code == 400 and len(response.content) < 1000
    assert response.json()["error"]["param"] == "model"
    longest = "m" * MAX_NAME_CHARS  # the longest name allowed: unknown, 404
    unknown = asyncio.run(post_chat(services, {"model": longest, "messages": [
        {"role": "user", "content": "Hi."}]}))
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    policy = asyncio.run(post_chat(services, {"model": "stub", "messages": [
        {"role": "user", "content": "Hi."}]}, {"X-Vilmo-Policy": "p" * 100_000}))
    assert policy.status_code == 400 and len(policy.content) < 2000  # the cut name, the policies
    assert isinstance(services.audit, MemoryAudit)
    assert all(len(r.model) <= MAX_NAME_CHARS for r in services.audit.records)
    record = build_record("req-1", "team", 0.0, Facts(model=huge), "404")
    assert record.model == shown_name(huge) and len(record.model) < MAX_NAME_CHARS + 4


@pytest.mark.parametrize("sent, param", [({"json": {"text": "hi", "policy": "default"}}, "policy"),
                                         ({"json": {"text": "hi"},
                                           "headers": {"x-vilmo-policy": "default"}},
                                          "X-Vilmo-Policy")])
def test_a_policy_the_key_may_not_choose_is_named_where_it_was_sent(
        policy_dir: Path, bank: PrincipleBank, sent: dict[str, Any], param: str) -> None:
    """The check route's body field ``policy`` was reported as the header X-Vilmo-Policy."""
    from proxy.key_config import KeyBinding
    from proxy.settings import AuthSettings

    services = fake_services(policy_dir, bank)
    services.config.auth = AuthSettings(keys=[KeyBinding(key="sk-bound-0123456789",
                                                         name="bound")])
    sent["headers"] = {"authorization": "Bearer sk-bound-0123456789", **sent.get("headers", {})}

    async def check() -> httpx.Response:
        transport = httpx.ASGITransport(app=app_with(services))
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            return await client.post("/v1/values/check", **sent)

    reply = asyncio.run(check())
    assert reply.status_code == 403, reply.text
    assert reply.json()["error"]["param"] == param
    assert f"({param}: 'default')" in reply.json()["error"]["message"]
