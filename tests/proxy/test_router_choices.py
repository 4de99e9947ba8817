"""An ``n > 1`` stream on LiteLLM's Router path ends every choice as the direct path does:
LiteLLM's stream wrapper drops each later choice's first chunk (its ``role``) and keeps one
``finish_reason`` for the whole stream, so choice 1 had neither role nor finish_reason (the
openai client's stream helper built it with no role). Each choice now gets ``role`` on its
first delta and a ``finish_reason`` (the stream's, LiteLLM's one: ``proxy.router_choices``)."""

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
    ends = ChoiceEnds()
    chunks: list[dict[str, Any]] = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": "a"}}]},
              {"choices": [{"index": 1, "delta": {"content": "b"}}]},
              {"choices": [{"index": 1, "delta": {}, "finish_reason": "length"}]},
              {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]
    for chunk in chunks:
        ends.note(chunk)
    assert chunks[1]["choices"][0]["delta"] == {"role": "assistant", "content": "b"}
    assert [c["finish_reason"] for c in chunks[-1]["choices"]] == ["stop"]


def test_a_choice_left_unfinished_is_given_the_streams_reason() -> None:
    ends = ChoiceEnds()
    chunks: list[dict[str, Any]] = [{"id": "c", "choices": [{"index": 0, "delta": {"role": "assistant"}}]},
              {"id": "c", "choices": [{"index": 1, "delta": {"content": "b"}}]},
              {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}]
    for chunk in chunks:
        ends.note(chunk)
    assert [(c["index"], c["finish_reason"]) for c in chunks[-1]["choices"]] == [
        (0, "length"), (1, "length")]
    late: dict[str, Any] = {"id": "c", "choices": [{"index": 2, "delta": {"content": "z"}}]}
    ends.note(late)  # a choice first seen after the finish: finished on its first chunk
    assert late["choices"] == [{"index": 2, "delta": {"role": "assistant", "content": "z"},
                                "finish_reason": "length"}]
