"""What a client may put in content parts and tool definitions (reviewer's rv5 findings 3, 4).

Before the fixes: a ``file`` part whose ``file_id`` was a URL made the gateway itself download
it (LiteLLM's OpenAI transformation, up to 50 MB a part, any number of parts) and send the
bytes on, unseen by any check; LiteLLM likewise downloaded image URLs for providers that take
bytes; and a tool was checked only by its ``type``: a function tool without ``function``, any
extra field (``server_url``, ``headers``), any number of tools and any description reached the
upstream. The file host here is a loopback server put on LiteLLM's allow-list, standing for
any public host.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import openai
import pytest
from conftest import BOTH_PATHS, TEAM_KEY, UPSTREAM_SECRET, gateway_config_dict
from fakes import KeywordClassifier
from openai.types.chat import ChatCompletionToolParam
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from stub_upstream import ServerThread, StubUpstream

from proxy.protocol import MAX_MEDIA_PARTS
from proxy.tools import MAX_TOOL_DESCRIPTION_CHARS, MAX_TOOLS

pytestmark = BOTH_PATHS  # LiteLLM's Router and the direct path pass the same tests

AUTH = {"Authorization": f"Bearer {TEAM_KEY}"}
PDF = b"%PDF-1.4 a document no check has read"
PDF_DATA = "data:application/pdf;base64,JVBERi0xLjQgYSBkb2N1bWVudA=="


class FileHost:
    """A host serving one PDF and one image, counting every request it gets."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.url = ""

    def app(self) -> Starlette:
        async def serve(request: Request) -> Response:
            self.hits.append(request.url.path)
            return Response(PDF, media_type="application/pdf")
        return Starlette(routes=[Route("/{name}", serve)])


@pytest.fixture(scope="module")
def file_host() -> Iterator[FileHost]:
    import litellm

    host = FileHost()
    with ServerThread(host.app()) as server:
        host.url = server.url
        allowed = litellm.user_url_allowed_hosts
        litellm.user_url_allowed_hosts = [server.url.split("//")[1]]  # stands for a public host
        try:
            yield host
        finally:
            litellm.user_url_allowed_hosts = allowed


@pytest.fixture(scope="module")
def parts_gateway(stub: StubUpstream, policy_dir: Path, upstream_path: str,
                  real_models: None) -> Iterator[str]:
    from proxy.app import create_app
    from proxy.services import build_services
    from proxy.settings import GatewayConfig

    config = gateway_config_dict(stub.url, policy_dir, upstream_path)
    config["model_list"] = [*cast(list[Any], config["model_list"]), {
        "model_name": "claude", "litellm_params": {
            "model": "anthropic/claude-stub", "api_base": stub.url, "api_key": UPSTREAM_SECRET}}]
    classifier = KeywordClassifier()
    app = create_app(GatewayConfig.model_validate(config),
                     lambda c: build_services(c, lambda policy: classifier))
    with ServerThread(app) as server:
        yield f"{server.url}/v1"


def post(gateway: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{gateway}/chat/completions", json={"model": "stub", **body},
                      headers=AUTH, timeout=30)


def refused(response: httpx.Response, param: str, stub: StubUpstream) -> str:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error", error
    assert stub.received == []
    return str(error["message"])


def user(*parts: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "text", "text": "Summarise it."}, *parts]}]


# --- file parts ------------------------------------------------------------------------------

def test_a_file_id_that_is_a_url_is_refused_and_never_fetched(
        parts_gateway: str, stub: StubUpstream, file_host: FileHost) -> None:
    for url in (f"{file_host.url}/doc.pdf", "www.example.com/doc.pdf"):
        response = post(parts_gateway, {"messages": user(
            {"type": "file", "file": {"file_id": url}})})
        refused(response, "messages.0.content.1.file.file_id", stub)
    assert file_host.hits == []


@pytest.mark.parametrize("file, param", [
    ({"file_data": "http://host/doc.pdf"}, "file.file_data"),
    ({"file_data": "JVBERi0xLjQ="}, "file.file_data"),  # not a data: URL
    ({"file_data": "data:application/pdf,plain"}, "file.file_data"),  # not base64
    ({"file_id": "../../etc/passwd"}, "file.file_id"),
    ({"file_id": "file-abc", "url": "http://host/doc.pdf"}, "file.url"),
    ({"file_id": "file-abc", "format": "application/pdf"}, "file.format"),
    ({"filename": "doc.pdf"}, "file"),  # neither an id nor data
    ({"file_id": "file-abc", "filename": "x" * 256}, "file.filename"),
])
def test_a_file_part_is_an_uploaded_id_or_inline_data_only(
        parts_gateway: str, stub: StubUpstream, file: dict[str, Any], param: str) -> None:
    response = post(parts_gateway, {"messages": user({"type": "file", "file": file})})
    refused(response, f"messages.0.content.1.{param}", stub)


@pytest.mark.parametrize("file", [
    {"file_id": "file-BK7bzQj3FfZFXr7DbL6xJwfo"},
    {"file_id": "assistant-Abc_123-x"},
    {"file_data": PDF_DATA, "filename": "doc.pdf"},
])
def test_file_parts_as_openai_defines_them_pass(parts_gateway: str, stub: StubUpstream,
                                                file: dict[str, Any]) -> None:
    response = post(parts_gateway, {"messages": user({"type": "file", "file": file})})
    assert response.status_code == 200, response.text
    sent = stub.last.body["messages"][-1]["content"][-1]["file"]
    assert {k: sent[k] for k in file} == file


# --- image parts -----------------------------------------------------------------------------

def test_the_gateway_never_downloads_an_image_url(
        parts_gateway: str, stub: StubUpstream, file_host: FileHost, upstream_path: str,
        ) -> None:
    """Anthropic takes no ``http://`` image URL, so LiteLLM fetched it for the upstream."""
    image = {"type": "image_url", "image_url": {"url": f"{file_host.url}/cat.png"}}
    response = post(parts_gateway, {"model": "claude", "messages": user(image)})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert "download is disabled" in error["message"] and "data: URL" in error["message"]
    assert error["code"] == "upstream_bad_request"
    assert file_host.hits == [] and stub.received == []
    openai_image = {"type": "image_url", "image_url": {"url": "https://host/cat.png",
                                                       "detail": "low"}}
    assert post(parts_gateway, {"messages": user(openai_image)}).status_code == 200
    assert stub.last.body["messages"][-1]["content"][-1] == openai_image  # the URL, as sent


@pytest.mark.parametrize("image, param", [
    ({"url": "https://host/cat.png", "headers": {"a": "b"}}, "image_url.headers"),
    ({"url": "https://host/cat.png", "detail": "ultra"}, "image_url.detail"),
    ({"detail": "low"}, "image_url.url"),
])
def test_an_image_part_has_openais_fields_only(parts_gateway: str, stub: StubUpstream,
                                               image: dict[str, Any], param: str) -> None:
    response = post(parts_gateway, {"messages": user({"type": "image_url", "image_url": image})})
    refused(response, f"messages.0.content.1.{param}", stub)


def test_media_parts_per_request_are_bounded(parts_gateway: str, stub: StubUpstream) -> None:
    image = {"type": "image_url", "image_url": {"url": "data:,"}}
    file = {"type": "file", "file": {"file_id": "file-abc"}}
    half = MAX_MEDIA_PARTS // 2
    messages = [*user(*[image] * half), {"role": "user", "content": [file] * half}]
    assert post(parts_gateway, {"messages": messages}).status_code == 200
    stub.reset()
    messages[1]["content"] = [file] * (half + 1)
    message = refused(post(parts_gateway, {"messages": messages}),
                      f"messages.1.content.{half}", stub)
    assert f"at most {MAX_MEDIA_PARTS}" in message


# --- tools -----------------------------------------------------------------------------------

FUNCTION: dict[str, Any] = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.", "strict": True,
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
CUSTOM: dict[str, Any] = {"type": "custom", "custom": {
    "name": "sql", "description": "Runs a query.",
    "format": {"type": "grammar", "grammar": {"definition": "start: /.+/", "syntax": "lark"}}}}


@pytest.mark.parametrize("tools, param", [
    ([{"type": "function"}], "tools.0"),
    ([{"type": "function", "function": None}], "tools.0"),
    ([{"type": "custom", "function": FUNCTION["function"]}], "tools.0"),
    ([FUNCTION, {"type": "function", "function": {}}], "tools.1.function.name"),
    ([{**CUSTOM, "server_url": "http://10.0.0.1/", "headers": {"a": "b"}}], "tools.0.server_url"),
    ([{"type": "function", "function": {**FUNCTION["function"], "url": "x"}}],
     "tools.0.function.url"),
    ([{"type": "function", "function": {"name": "no spaces"}}], "tools.0.function.name"),
    ([{"type": "function", "function": {"name": "f" * 65}}], "tools.0.function.name"),
    ([{"type": "function", "function": {
        "name": "f", "description": "d" * (MAX_TOOL_DESCRIPTION_CHARS + 1)}}],
     "tools.0.function.description"),
    ([{"type": "function", "function": {"name": "f", "parameters": "{}"}}],
     "tools.0.function.parameters"),
    ([{"type": "custom", "custom": {"name": "c", "format": {"type": "grammar"}}}],
     "tools.0.custom.format"),
    ([{"type": "mcp", "server_label": "x", "server_url": "litellm_proxy/mcp/x"}], "tools.0.type"),
    ([{"type": "function", "function": {"name": f"f{i}"}} for i in range(MAX_TOOLS + 1)],
     "tools"),
])
def test_a_tool_has_openais_fields_only(parts_gateway: str, stub: StubUpstream,
                                        tools: list[dict[str, Any]], param: str) -> None:
    refused(post(parts_gateway, {"messages": user(), "tools": tools}), param, stub)


@pytest.mark.parametrize("choice, param", [
    ("sometimes", "tool_choice"),
    ({"type": "function"}, "tool_choice"),
    ({"type": "function", "function": {"name": "get_weather"}, "server_url": "x"},
     "tool_choice.server_url"),
    ({"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": [{"type": "mcp"}]}},
     "tool_choice.allowed_tools.tools.0.type"),
])
def test_a_tool_choice_has_openais_fields_only(parts_gateway: str, stub: StubUpstream,
                                               choice: Any, param: str) -> None:
    body = {"messages": user(), "tools": [FUNCTION], "tool_choice": choice}
    refused(post(parts_gateway, body), param, stub)


@pytest.mark.parametrize("choice", [
    "auto", "none", "required", {"type": "function", "function": {"name": "get_weather"}},
    {"type": "custom", "custom": {"name": "sql"}},
    {"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [
        {"type": "function", "function": {"name": "get_weather"}}]}},
])
def test_tools_as_openai_defines_them_reach_the_upstream(
        parts_gateway: str, stub: StubUpstream, choice: Any, upstream_path: str) -> None:
    tools = [FUNCTION, CUSTOM] + [{"type": "function", "function": {"name": f"f{i}"}}
                                  for i in range(MAX_TOOLS - 2)]
    response = post(parts_gateway, {"messages": user(), "tools": tools, "tool_choice": choice})
    if upstream_path == "router" and isinstance(choice, dict) and choice["type"] == "custom":
        assert response.json()["error"]["code"] == "upstream_bad_request"  # LiteLLM's own 400
        return
    assert response.status_code == 200, response.text
    assert stub.last.body["tools"] == tools and stub.last.body["tool_choice"] == choice


def test_the_openai_clients_tool_calls_pass(parts_gateway: str, stub: StubUpstream) -> None:
    client = openai.OpenAI(base_url=parts_gateway, api_key=TEAM_KEY, max_retries=0)
    tools: list[ChatCompletionToolParam] = [FUNCTION]  # type: ignore[list-item]
    client.chat.completions.create(model="stub", messages=[{"role": "user", "content": "Hi."}],
                                   tools=tools, tool_choice="required")
    assert stub.last.body["tools"] == tools
