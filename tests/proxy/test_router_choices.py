"""An ``n > 1`` stream on LiteLLM's Router path ends every choice as the direct path does:
LiteLLM's stream wrapper drops each later choice's first chunk (its ``role``) and keeps one
``finish_reason`` for the whole stream, so choice 1 had neither role nor finish_reason (the
openai client's stream helper built it with no role). Each choice now gets ``role`` on its
first delta and a ``finish_reason`` at the stream's end, never mid-stream (``proxy.router_choices``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from conftest import ADMIN_KEY, gateway_config_dict
from fakes import upstream_services
from stub_upstream import ServerThread, StubUpstream

from proxy.app import create_app
from proxy.router_choices import ChoiceEnds
from proxy.settings import GatewayConfig

SCRIPT = [{"content": "One. Two three."}, {"content": "Four five. Six."}]


@pytest.fixture(scope="module", params=["direct", "router"])
def url(request: pytest.FixtureRequest, stub: StubUpstream, policy_dir: Path,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    config = GatewayConfig.model_validate(
        gateway_config_dict(stub.url, policy_dir, str(request.param)))
    config.store.path = tmp_path_factory.mktemp("choices") / "state.db"
    services = upstream_services(config, policy_dir)
    with ServerThread(create_app(config, lambda _: services)) as server:
        yield f"{server.url}/v1"


@pytest.mark.parametrize("policy", ["g-allow-monitor", "default", "g-block-chunked"])
def test_every_choice_of_a_stream_has_its_role_and_finish_reason(
        url: str, stub: StubUpstream, policy: str) -> None:
    stub.script = SCRIPT
    client = openai.OpenAI(base_url=url, api_key=ADMIN_KEY, max_retries=0,
                           default_headers={"X-Vilmo-Policy": policy})
    roles: dict[int, str] = {}
    finishes: dict[int, str] = {}
    texts: dict[int, str] = {0: "", 1: ""}
    for chunk in client.chat.completions.create(model="stub", n=2, stream=True, messages=[
            {"role": "user", "content": "hi"}]):
        for choice in chunk.choices:
            assert choice.index not in finishes, "a delta after its choice finished"
            if choice.delta.role:
                assert choice.index not in roles and not texts[choice.index]
                roles[choice.index] = choice.delta.role
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert roles == {0: "assistant", 1: "assistant"}
    assert finishes == {0: "stop", 1: "stop"}
    assert texts == {0: "One. Two three.", 1: "Four five. Six."}

    stub.script = SCRIPT
    with client.chat.completions.stream(model="stub", n=2, messages=[
            {"role": "user", "content": "hi"}]) as stream:
        final = stream.get_final_completion()
    assert [(c.index, c.message.role, c.finish_reason, c.message.content)
            for c in final.choices] == [(0, "assistant", "stop", "One. Two three."),
                                        (1, "assistant", "stop", "Four five. Six.")]


def test_a_choice_finished_by_the_upstream_keeps_its_own_reason() -> None:
    ends = ChoiceEnds(2)
    chunks: list[dict[str, Any]] = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": "a"}}]},
              {"choices": [{"index": 1, "delta": {"content": "b"}}]},
              {"choices": [{"index": 1, "delta": {}, "finish_reason": "length"}]},
              {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]
    for chunk in chunks:
        ends.note(chunk)
    assert chunks[1]["choices"][0]["delta"] == {"role": "assistant", "content": "b"}
    assert [c["finish_reason"] for c in chunks[-1]["choices"]] == ["stop"]


def test_no_choice_is_finished_mid_stream_only_at_its_end() -> None:
    """LiteLLM passes choice 0's reason on when it comes, while choice 1 still sends: choice 1
    was stamped finished there (and on its later chunks), so a chunked check cut it to its first
    sentence and never judged the rest. Reasons for unfinished choices come at the end only."""
    ends = ChoiceEnds(2)
    chunks: list[dict[str, Any]] = [
        {"id": "c", "choices": [{"index": 0, "delta": {"role": "assistant"}}]},
        {"id": "c", "choices": [{"index": 1, "delta": {"content": "b"}}]},
        {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]},
        {"id": "c", "choices": [{"index": 1, "delta": {"content": "more"}}]}]
    sent = [out for chunk in chunks for out in ends.note(chunk)]
    assert sent == chunks
    assert [(c["index"], c.get("finish_reason")) for c in chunks[2]["choices"]] == [(0, "length")]
    assert chunks[3]["choices"][0].get("finish_reason") is None
    assert ends.ending() == {"id": "c", "choices": [
        {"index": 1, "delta": {}, "finish_reason": "length"}]}
    assert ends.ending() is None


def test_the_end_comes_before_a_usage_chunk_and_fits_tool_calls() -> None:
    ends = ChoiceEnds(3)
    call = {"index": 0, "id": "x", "function": {"name": "f", "arguments": "{}"}}
    ends.note({"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]})
    ends.note({"choices": [{"index": 1, "delta": {"content": "text"}}]})
    ends.note({"choices": [{"index": 2, "delta": {"tool_calls": [call]}}]})
    assert ends.note({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    usage: dict[str, Any] = {"choices": [], "usage": {"total_tokens": 3}}
    ending, last = ends.note(usage)
    assert last is usage
    assert [(c["index"], c["finish_reason"]) for c in ending["choices"]] == [
        (1, "stop"), (2, "tool_calls")]
    assert ends.ending() is None


def test_indexes_past_n_are_not_tracked() -> None:
    ends = ChoiceEnds(2)
    many: list[dict[str, Any]] = [{"index": i, "delta": {"content": "x"}} for i in range(5000)]
    ends.note({"choices": many})
    assert len(ends.seen) == 2 and "role" not in many[2]["delta"]
    ends.note({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    assert ends.ending() == {"choices": [{"index": 1, "delta": {}, "finish_reason": "stop"}]}


def test_a_choices_harmful_tail_after_another_finished_is_judged(
        url: str, stub: StubUpstream) -> None:
    stub.script = [{"content": "Hi."},
                   {"content": "Sure. Go and stab him now, hurt him badly. Then kill them all."}]
    client = openai.OpenAI(base_url=url, api_key=ADMIN_KEY, max_retries=0,
                           default_headers={"X-Vilmo-Policy": "g-block-chunked"})
    texts: dict[int, str] = {0: "", 1: ""}
    for chunk in client.chat.completions.create(model="stub", n=2, stream=True, messages=[
            {"role": "user", "content": "hi"}]):
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    assert texts == {0: "Hi.", 1: "Sure.\nREFUSED-BY-POLICY"}


def test_a_text_choice_next_to_a_tool_call_choice_ends_with_stop(
        url: str, stub: StubUpstream) -> None:
    stub.script = [{"tool_calls": [{"id": "c1", "type": "function",
                                    "function": {"name": "f", "arguments": "{}"}}]},
                   {"content": "Plain words here."}]
    client = openai.OpenAI(base_url=url, api_key=ADMIN_KEY, max_retries=0,
                           default_headers={"X-Vilmo-Policy": "g-allow-monitor"})
    finishes: dict[int, str] = {}
    for chunk in client.chat.completions.create(
            model="stub", n=2, stream=True, messages=[{"role": "user", "content": "hi"}],
            tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]):
        for choice in chunk.choices:
            assert choice.index not in finishes, "a delta after its choice finished"
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert finishes == {0: "tool_calls", 1: "stop"}


def test_a_text_choice_litellm_ends_with_tool_calls_ends_with_stop() -> None:
    """review mr9: LiteLLM rewrites choice 0's ``stop`` to ``tool_calls`` when choice 1 called
    tools; a client dispatching on it read ``message.tool_calls`` of a text choice (None)."""
    ends = ChoiceEnds(2)
    call = {"index": 0, "id": "x", "function": {"name": "f", "arguments": "{}"}}
    ends.note({"choices": [{"index": 0, "delta": {"content": "One."}}]})
    ends.note({"choices": [{"index": 1, "delta": {"tool_calls": [call]}}]})
    (last,) = ends.note({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    assert last["choices"][0]["finish_reason"] == "stop"
    assert ends.ending() == {"choices": [{"index": 1, "delta": {}, "finish_reason": "tool_calls"}]}
