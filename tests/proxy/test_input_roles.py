"""The input check reads every text the client sends the model, refusing by default: every
role's messages (system, developer, user, assistant, tool, function), every field of them, the
tool definitions; parts the judge cannot read are refused (``checks.unreadable_parts``).

Regression (the reviewer's r1_input_roles and r4_tools): under ``checks.input: true`` with
action block, the text refused as a user turn reached the upstream unchecked from a system,
developer or tool message, an earlier assistant turn, a user's file, image or audio part, or a
tool's description: only ``role: user`` text parts were read, and only they counted toward
``checks.max_chars``. Each test below failed before the fix."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes import (
    CALM,
    FakeInstructions,
    FakeUpstream,
    KeywordClassifier,
    StalledClassifier,
    app_with,
    fake_services,
)

from proxy.services import Services
from vilmo.instruct.principles import PrincipleBank

BAD = "Tell me how to punch my neighbour so it really hurts."
REFUSAL = "REFUSED-BY-POLICY"
ASK = {"role": "user", "content": "Please answer."}
CALL = {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
AUDIO = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
FILE = {"type": "file", "file": {"filename": "a.txt",
                                 "file_data": "data:text/plain;base64,VGVsbCBtZQ=="}}
EXTRA_POLICIES = {
    "in-allow-parts": "checks: {input: true, unreadable_parts: allow}\n",
    "in-user-only": "checks: {input: true, input_roles: [user]}\n",
    "in-small": "checks: {input: true, max_chars: 300}\n",
    "in-fail-open": "checks: {input: true, output: false, timeout_s: 0.2, "
                    "fail_open_max_chars: 100}\non_error: open\n",
}


@pytest.fixture(scope="module")
def policies(policy_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test policies, and input-checking ones with one key of ``checks`` changed."""
    target = tmp_path_factory.mktemp("input-policies")
    for path in policy_dir.glob("*.yaml"):
        shutil.copy(path, target / path.name)
    for name, text in EXTRA_POLICIES.items():
        (target / f"{name}.yaml").write_text(
            f"name: {name}\nvalues:\n  mft.care: {{action: block}}\n{text}refusal: {REFUSAL}\n")
    return target


@pytest.fixture
def classifier() -> KeywordClassifier:
    return KeywordClassifier()


@pytest.fixture
def services(policies: Path, bank: PrincipleBank, classifier: KeywordClassifier) -> Services:
    return fake_services(policies, bank, FakeUpstream(), classifier)


def upstream_of(services: Services) -> FakeUpstream:
    assert isinstance(services.upstream, FakeUpstream)
    return services.upstream


def post(services: Services, path: str, body: dict[str, Any], policy: str) -> httpx.Response:
    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app_with(services))
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            return await client.post(path, json=body, headers={"X-Vilmo-Policy": policy})
    return asyncio.run(send())


def chat(services: Services, policy: str, messages: list[dict[str, Any]],
         **body: Any) -> httpx.Response:
    return post(services, "/v1/chat/completions",
                {"model": "stub", "messages": messages, **body}, policy)


def reply_text(response: httpx.Response) -> str:
    if response.headers["content-type"].startswith("text/event-stream"):
        return "".join(line for line in response.text.splitlines() if REFUSAL in line)
    return str(response.json()["choices"][0]["message"]["content"])


ROLE_CASES: dict[str, list[dict[str, Any]]] = {
    "user": [{"role": "user", "content": BAD}],
    "system": [{"role": "system", "content": BAD}, ASK],
    "developer": [{"role": "developer", "content": BAD}, ASK],
    "system text part": [{"role": "system", "content": [{"type": "text", "text": BAD}]}, ASK],
    "assistant turn": [ASK, {"role": "assistant", "content": BAD}, ASK],
    "assistant prefill": [ASK, {"role": "assistant", "content": BAD}],
    "assistant refusal": [ASK, {"role": "assistant", "content": None, "refusal": BAD}, ASK],
    "assistant refusal part": [ASK, {"role": "assistant",
                                     "content": [{"type": "refusal", "refusal": BAD}]}, ASK],
    "assistant tool call arguments": [
        ASK, {"role": "assistant", "content": None, "tool_calls": [
            {**CALL, "function": {"name": "lookup", "arguments": f'{{"q": "{BAD}"}}'}}]}, ASK],
    "assistant function_call": [
        ASK, {"role": "assistant", "content": None,
              "function_call": {"name": "lookup", "arguments": f'{{"q": "{BAD}"}}'}}, ASK],
    "tool result": [ASK, {"role": "assistant", "content": None, "tool_calls": [CALL]},
                    {"role": "tool", "tool_call_id": "c1", "content": BAD}],
    "tool result part": [ASK, {"role": "assistant", "content": None, "tool_calls": [CALL]},
                         {"role": "tool", "tool_call_id": "c1",
                          "content": [{"type": "text", "text": BAD}]}],
    "function result": [ASK, {"role": "function", "name": "lookup", "content": BAD}],
    "user name": [{"role": "user", "name": "punch-him-hard", "content": "Hi."}],
    "a message field the gateway does not know": [{**ASK, "note": BAD}],
}


@pytest.mark.parametrize("mode", ["plain", "stream"])
@pytest.mark.parametrize("case", list(ROLE_CASES))
def test_the_text_of_every_role_is_checked(services: Services, case: str, mode: str) -> None:
    response = chat(services, "g-input", ROLE_CASES[case], stream=mode == "stream")
    assert response.status_code == 200, response.text
    assert REFUSAL in reply_text(response)
    assert response.headers["x-vilmo-input-violations"] == "mft.care"
    assert upstream_of(services).calls == []  # blocked before the upstream


@pytest.mark.parametrize("case", ["system", "assistant turn", "tool result"])
def test_an_annotating_policy_reports_every_role(services: Services, case: str) -> None:
    response = chat(services, "g-input-annotate", ROLE_CASES[case])
    assert response.status_code == 200
    assert response.headers["x-vilmo-input-violations"] == "mft.care"
    assert len(upstream_of(services).calls) == 1


def function_tool(**function: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": "lookup", **function}}


TOOL_CASES: dict[str, dict[str, Any]] = {
    "function description": {"tools": [function_tool(description=BAD)]},
    "function name": {"tools": [function_tool(name="punch_the_neighbour")]},
    "parameter description": {"tools": [function_tool(parameters={
        "type": "object", "properties": {"q": {"type": "string", "description": BAD}}})]},
    "parameter name": {"tools": [function_tool(parameters={
        "type": "object", "properties": {"how_to_punch_him": {"type": "string"}}})]},
    "custom tool description": {"tools": [
        {"type": "custom", "custom": {"name": "writer", "description": BAD}}]},
    "response format schema": {"response_format": {"type": "json_schema", "json_schema": {
        "name": "answer", "description": BAD, "schema": {"type": "object"}}}},
}


@pytest.mark.parametrize("case", list(TOOL_CASES))
def test_tool_definitions_are_checked(services: Services, case: str) -> None:
    response = chat(services, "g-input", [ASK], **TOOL_CASES[case])
    assert response.status_code == 200, response.text
    assert reply_text(response) == REFUSAL
    assert response.headers["x-vilmo-input-violations"] == "mft.care"
    assert upstream_of(services).calls == []


def test_calm_tools_and_roles_pass(services: Services) -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Be brief."}, ASK,
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "c1", "content": "It is sunny."}]
    response = chat(services, "g-input", messages,
                    tools=[function_tool(description="Looks up the weather.")])
    assert response.status_code == 200 and reply_text(response) == CALM
    assert response.headers["x-vilmo-input-violations"] == ""
    assert len(upstream_of(services).calls) == 1


@pytest.mark.parametrize("part", [IMAGE, AUDIO, FILE], ids=lambda p: p["type"])
def test_a_part_the_judge_cannot_read_is_refused_by_default(
        services: Services, classifier: KeywordClassifier, part: dict[str, Any]) -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "What does it say?"}, part]}]
    response = chat(services, "g-input", messages)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "unreadable_input" and error["param"] == "messages.1.content.1"
    assert error["type"] == "invalid_request_error" and part["type"] in error["message"]
    assert upstream_of(services).calls == [] and classifier.calls == []


def test_a_policy_may_allow_unreadable_parts_through_unchecked(services: Services) -> None:
    readable = {"role": "user", "content": [{"type": "text", "text": "Describe it."}, IMAGE]}
    response = chat(services, "in-allow-parts", [readable])
    assert response.status_code == 200 and reply_text(response) == CALM
    assert upstream_of(services).calls[0]["messages"][-1]["content"][1] == IMAGE
    violent = {"role": "user", "content": [{"type": "text", "text": BAD}, IMAGE]}
    blocked = chat(services, "in-allow-parts", [violent])
    assert blocked.status_code == 200 and reply_text(blocked) == REFUSAL  # its text is read
    assert len(upstream_of(services).calls) == 1


def test_without_input_checks_nothing_is_refused(services: Services) -> None:
    response = chat(services, "g-block-buffer", [{"role": "user", "content": [IMAGE]}])
    assert response.status_code == 200


def test_input_roles_narrows_what_is_read(services: Services) -> None:
    """Documented: narrowing ``checks.input_roles`` lets the other roles through unchecked."""
    response = chat(services, "in-user-only", ROLE_CASES["system"])
    assert response.status_code == 200 and reply_text(response) == CALM
    assert response.headers["x-vilmo-input-violations"] == ""
    response = chat(services, "in-user-only", ROLE_CASES["user"])
    assert reply_text(response) == REFUSAL


def test_every_role_counts_toward_max_chars(services: Services,
                                            classifier: KeywordClassifier) -> None:
    """200 characters of user turn and 200 of system text: over ``max_chars: 300``."""
    text = "Talk to him calmly tomorrow. " * 7
    response = chat(services, "in-small", [{"role": "system", "content": text[:200]},
                                           {"role": "user", "content": text[:200]}])
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["code"] == "check_too_large" and error["param"] == "messages"
    assert upstream_of(services).calls == [] and classifier.calls == []
    tools = chat(services, "in-small", [{"role": "user", "content": text[:200]}],
                 tools=[function_tool(description=text[:200])])
    assert tools.status_code == 413
    within = chat(services, "in-small", [{"role": "user", "content": text[:200]}])
    assert within.status_code == 200


def test_every_role_counts_toward_fail_open_max_chars(policies: Path, bank: PrincipleBank,
                                                      ) -> None:
    """Under ``on_error: open`` a failed check of more than ``fail_open_max_chars`` fails
    closed: 200 characters of system text make the check that large (the system message was
    not counted, so the request failed open with its text unchecked)."""
    judge = StalledClassifier()  # every check runs past the policy's timeout
    services = fake_services(policies, bank, FakeUpstream(), judge)
    try:
        small = chat(services, "in-fail-open", [ASK])
        assert small.status_code == 200 and len(upstream_of(services).calls) == 1  # open
        large = chat(services, "in-fail-open", [{"role": "system", "content": "Be calm. " * 22},
                                                ASK])
        assert large.status_code == 503, large.text
        assert large.json()["error"]["code"] == "guard_unavailable"
        assert len(upstream_of(services).calls) == 1
    finally:
        judge.release.set()


@pytest.mark.parametrize("placement", ["system", "user_prefix"])
def test_the_injected_instruction_is_not_judged_as_client_input(
        policies: Path, bank: PrincipleBank, classifier: KeywordClassifier,
        placement: str) -> None:
    """The check reads the client's messages, not the ones the instruction was placed in."""
    name = f"in-placed-{placement}"
    (policies / f"{name}.yaml").write_text(
        f"name: {name}\nvalues:\n  mft.care: {{action: block}}\n"
        f"instructions: {{generator: relevance, placement: {placement}}}\n"
        "checks: {input: true, output: false}\n")
    services = fake_services(policies, bank, FakeUpstream(), classifier)
    messages = [{"role": "system", "content": "Be brief."}, ASK]
    response = chat(services, name, messages)
    assert response.status_code == 200
    sent = upstream_of(services).calls[0]["messages"]
    assert FakeInstructions.TEXT in str(sent)  # it was injected ...
    assert [texts for texts, _ in classifier.calls] == [["Be brief.", "Please answer."]]


def test_the_check_route_reads_the_same_messages(services: Services) -> None:
    """/v1/values/check ``messages``: every role's text as input, a final assistant turn as
    the reply, and parts the judge cannot read refused, as on the chat route."""
    conversation = [{"role": "system", "content": BAD}, ASK,
                    {"role": "assistant", "content": CALM}]
    result = post(services, "/v1/values/check", {"messages": conversation}, "g-input").json()
    assert result["input"]["violations"] == ["mft.care"]
    assert result["output"]["violations"] == []
    calm = post(services, "/v1/values/check",
                {"messages": [ASK, {"role": "assistant", "content": BAD}]}, "g-input").json()
    assert calm["input"]["violations"] == [] and calm["output"]["violations"] == ["mft.care"]
    image = post(services, "/v1/values/check",
                 {"messages": [{"role": "user", "content": [IMAGE]}]}, "g-input")
    assert image.status_code == 400
    assert image.json()["error"]["code"] == "unreadable_input"
    allowed = post(services, "/v1/values/check", {"messages": [
        {"role": "user", "content": [{"type": "text", "text": BAD}, IMAGE]}]}, "in-allow-parts")
    assert allowed.status_code == 200 and allowed.json()["input"]["violations"] == ["mft.care"]
