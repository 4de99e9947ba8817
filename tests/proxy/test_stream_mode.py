"""A stream's mode is kept once (``Facts.mode``): the ``x-vilmo-stream-mode`` header, the
annotation and the audit record's ``stream_mode`` read the same value, even when the policy is
reloaded while the stream is served."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import guard_policy
from fakes import CALM, FakeUpstream, MemoryAudit, fake_services, post_chat

from proxy.call import Call
from proxy.outcome import NOT_CHECKED, Facts, Stream
from proxy.protocol import UpstreamParams
from proxy.replies import ChatCompletionChunk
from vilmo.instruct.instructions import NO_INSTRUCTION
from vilmo.instruct.principles import PrincipleBank
from vilmo.policy_store import PolicyStore

ASK = [{"role": "user", "content": "My neighbour insulted me. What should I do?"}]


async def _nothing() -> AsyncIterator[ChatCompletionChunk]:
    return
    yield


def _stream(facts: Facts, policy_dir: Path) -> Stream:
    call = Call({"model": "stub", "messages": ASK},
                PolicyStore(policy_dir, "default", 0).get("g-allow-chunked"), NO_INSTRUCTION)
    return Stream(_nothing(), call, facts, lambda judgement, status, code: None)


def test_a_streams_mode_is_its_facts_mode(policy_dir: Path) -> None:
    for mode in ("buffer", "chunked", "monitor", "off"):
        assert _stream(Facts(stream=True, mode=mode), policy_dir).mode == mode


def test_a_stream_whose_facts_lack_a_mode_is_refused(policy_dir: Path) -> None:
    with pytest.raises(ValueError, match="Facts.mode"):
        _stream(Facts(stream=True, reply=NOT_CHECKED), policy_dir)


class ReloadingUpstream(FakeUpstream):
    """Rewrites the policy to buffer mode, and reloads it, as the stream is opened."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder
        self.policies: PolicyStore | None = None

    async def stream(self, params: UpstreamParams) -> AsyncIterator[ChatCompletionChunk]:
        (self.folder / "g-allow-chunked.yaml").write_text(
            "name: g-allow-chunked\n" + guard_policy("allow", "buffer"))
        assert self.policies is not None
        for _ in range(2):  # a file changed since start-up loads on the second pass that sees
            self.policies.refresh(force=True)  # it unchanged (one pass: 1 run in 6 failed)
        async for chunk in super().stream(params):
            yield chunk


def test_a_reload_mid_stream_changes_neither_header_nor_record(
        policy_dir: Path, bank: PrincipleBank, tmp_path: Path) -> None:
    folder = tmp_path / "policies"
    shutil.copytree(policy_dir, folder)
    upstream = ReloadingUpstream(folder)
    services = fake_services(folder, bank, upstream)
    upstream.policies = services.policies
    response = asyncio.run(post_chat(
        services, {"model": "stub", "messages": ASK, "stream": True},
        {"X-Vilmo-Policy": "g-allow-chunked", "X-Vilmo-Annotate": "body"}))
    assert response.status_code == 200 and CALM.split(" ")[0] in response.text
    assert services.policies.loaded("g-allow-chunked").streaming.mode == "buffer"  # reloaded
    audit = services.audit
    assert isinstance(audit, MemoryAudit) and len(audit.records) == 1
    assert response.headers["x-vilmo-stream-mode"] == "chunked"
    assert audit.records[0].stream_mode == "chunked"
    assert '"mode": "buffer"' not in response.text and '"mode":"buffer"' not in response.text


@pytest.mark.parametrize(("policy", "mode"), [
    ("g-allow-buffer", "buffer"), ("g-allow-chunked", "chunked"),
    ("g-allow-monitor", "monitor"), ("g-input", "off"), ("default", None)])
def test_the_header_and_the_record_say_the_same_mode(
        policy_dir: Path, bank: PrincipleBank, policy: str, mode: str | None) -> None:
    """``g-input``: refused at the input (``off``); ``default``: its reply is unchecked
    unless it checks output, as the policy says."""
    services = fake_services(policy_dir, bank)
    ask = [{"role": "user", "content": "I will punch him"}] if policy == "g-input" else ASK
    response = asyncio.run(post_chat(services, {"model": "stub", "messages": ask,
                                                "stream": True},
                                     {"X-Vilmo-Policy": policy}))
    audit = services.audit
    assert response.status_code == 200
    assert isinstance(audit, MemoryAudit) and len(audit.records) == 1
    assert audit.records[0].stream_mode == response.headers["x-vilmo-stream-mode"]
    if mode is not None:
        assert response.headers["x-vilmo-stream-mode"] == mode
