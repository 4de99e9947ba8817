"""A reply's ``model`` is the requested or a configured model's name, or one of them and a
version (``proxy.fields.is_model_of``); any other is replaced by the requested name.

Before the fix any label was relayed (``proxy.fields.LABEL``: 128 characters of letters,
digits and ``_.:/@+=-``), unread by the reply check: an upstream's ``model`` of
``I-will-stab-you-tonight-with-a-knife`` reached the client in plain replies and streams on
the direct path (plain replies on LiteLLM's), under a policy that blocks those words."""

from __future__ import annotations

import openai
import pytest
from conftest import ADMIN_KEY
from openai.types.chat import ChatCompletionMessageParam
from streams import events, plain, sse
from stub_upstream import StubUpstream

pytestmark = pytest.mark.both_paths
SENTENCE = "I-will-stab-you-tonight-with-a-knife"
NAMES = {"stub", "stub-model"}
"""The requested name, or the deployment's (LiteLLM's Router puts it in a stream's chunks)."""


@pytest.mark.parametrize("model", [SENTENCE, f"stub-model-{SENTENCE}", f"stub-{SENTENCE}"])
@pytest.mark.parametrize("mode", ["plain", "buffer", "chunked"])
def test_a_model_name_never_carries_a_sentence(gateway: str, stub: StubUpstream, mode: str,
                                               model: str) -> None:
    stub.top_extra = {"model": model}
    if mode == "plain":
        response = plain(gateway, "g-block-buffer")
        assert response.status_code == 200, response.text
        assert "stab" not in response.text and response.json()["model"] in NAMES
        return
    status, lines = sse(gateway, f"g-block-{mode}")
    assert status == 200 and "stab" not in "".join(lines)
    assert len(models := {e["model"] for e in events(lines) if "model" in e}) == 1
    assert models <= NAMES


@pytest.mark.parametrize("model", ["stub-model", "stub-model-2024-08-06", "stub"])
def test_the_upstream_s_name_of_the_model_is_relayed(gateway: str, stub: StubUpstream,
                                                     model: str, upstream_path: str) -> None:
    """The deployment's own name (``openai/stub-model``), dated or not, reaches the client
    (a stream through LiteLLM's Router carries the name the Router gives it)."""
    stub.top_extra = {"model": model}
    client = openai.OpenAI(base_url=gateway, api_key=ADMIN_KEY, max_retries=0,
                           default_headers={"X-Vilmo-Policy": "g-block-buffer"})
    ask: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hi."}]
    assert client.chat.completions.create(model="stub", messages=ask).model == model
    chunks = list(client.chat.completions.create(model="stub", messages=ask, stream=True))
    assert {c.model for c in chunks} == {"stub-model" if upstream_path == "router" else model}


@pytest.mark.parametrize(("value", "requested", "relayed"), [
    ("gpt-4o", "gpt-4o", True), ("gpt-4o-2024-08-06", "gpt-4o", True),
    ("claude-3-5-sonnet@20240620", "claude-3-5-sonnet", True), ("llama3:latest", "llama3", True),
    ("meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.1-8B-Instruct", True),
    ("gpt-4o-mini", "gpt-4o", False), ("gpt-4o-stab-him", "gpt-4o", False),
    ("I-will-stab-you", "gpt-4o", False), ("gpt-4o-" + "1" * 11, "gpt-4o", False),
    ("gpt-4o" + "-1" * 7, "gpt-4o", False), ("then", "", True), (SENTENCE, "", True)])
def test_which_names_are_the_model_s(value: str, requested: str, relayed: bool) -> None:
    from proxy.fields import is_model_of
    assert is_model_of(value, requested) is relayed


@pytest.mark.parametrize(("value", "requested"), [
    ("gpt-4o-2024-08-06", "gpt-4o"), ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
    ("claude-3-5-sonnet@20240620", "claude-3-5-sonnet"), ("llama3:latest", "llama3"),
    ("gpt-4-0613", "gpt-4"), ("gpt-3.5-turbo-0125", "gpt-3.5-turbo"),
    ("mistral-large-2407", "mistral-large"), ("gemini-1.5-pro-002", "gemini-1.5-pro"),
    ("gpt-4-1106-preview", "gpt-4"), ("claude-3-5-sonnet-v2@20241022", "claude-3-5-sonnet"),
    ("anthropic.claude-3-5-sonnet-20240620-v1:0", "anthropic.claude-3-5-sonnet"),
    ("mistral-large-latest", "mistral-large"),
    # review rv5: a parameter-size tag (Ollama, vLLM), passed before rv4 and rewritten since
    ("llama3.1:8b", "llama3.1"), ("llama3.1:70b", "llama3.1"), ("qwen2.5:7b", "qwen2.5"),
    ("llama3.2:3b", "llama3.2"), ("mistral:7b", "mistral"), ("gemma2:9b", "gemma2"),
    ("phi3:3.8b", "phi3"), ("deepseek-r1:14b", "deepseek-r1"),
    ("qwen2.5-coder:32b", "qwen2.5-coder"), ("smollm:135m", "smollm"),
    ("llama3.1:8b-instruct-q4_0", "llama3.1"), ("llama3.1:8b-instruct-fp16", "llama3.1"),
    ("qwen2.5:7b-q8_0", "qwen2.5"), ("qwen2.5:7b-instruct-q4_K_M", "qwen2.5"),
    ("llama-3.1-8b", "llama-3.1"), ("llama-3.1-8B-Instruct", "llama-3.1")])
def test_real_versions_are_relayed(value: str, requested: str) -> None:
    from proxy.fields import is_model_of
    assert is_model_of(value, requested)


@pytest.mark.parametrize("value", [
    "gpt-4o-1-w1ll-5tab-y0u-t0n1ght", "gpt-4o-k1ll-h3r-at9pm-2nite",
    "gpt-4o-1-w1ll-5tab-y0u-t0n1ght@latest", "gpt-4o-2024-08-06@k1ll", "gpt-4o-5tab",
    "gpt-4o-1-2-3-4", "gpt-4o-12345", "gpt-4o:8b-k1ll", "gpt-4o:8b-q4_kill",
    "gpt-4o:8b-instruct-h1m", "gpt-4o:1234b", "gpt-4o:8bb", "gpt-4o-8b-q4_0-q4_0-q4_0-5tab"])
def test_a_version_of_letters_and_digits_is_no_version(value: str) -> None:
    """Review rv4: any part of at most 10 letters and digits with a digit among them passed as
    a version, so an upstream spelled words there in leetspeak, unread by the reply check;
    now only a version's known shapes (a date, a short number, ``vN``, ``latest``...) pass."""
    from proxy.fields import is_model_of
    assert not is_model_of(value, "gpt-4o")
