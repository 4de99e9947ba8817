"""Work that outlives its response (``proxy.late``): a monitor stream the client left is judged
after its response ended, and the gateway's shutdown waits for that judgement before it closes
the judge and the store. Before the fix the judgement was a bare task nobody awaited: a
shutdown right after the client left cancelled it, and its record said ``guard: error`` (no
verdict) and reached only an orphan spool file, not the trail."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import socket
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from fakes import FakeUpstream, KeywordClassifier, MemoryAudit, fake_services
from stub_upstream import ServerThread

from proxy.app import create_app
from proxy.late import LateWork
from proxy.outcome import FAILED_OPEN, Judgement
from proxy.protocol import UpstreamParams
from proxy.replies import ChatCompletionChunk
from proxy.settings import GatewayConfig
from proxy.sse import judge_then_finish
from proxy.store import AuditQuery, open_store
from proxy.store.config import StoreSettings
from vilmo.instruct.principles import PrincipleBank
from vilmo.judge.classifier import ScoreInput, ValueScores
from vilmo.policy_store import SHIPPED_POLICY_DIR, PolicyStore

JUDGE_S = 1.0
"""How long the judge takes over the reply the client left: well under the policy's check
timeout (``MONITOR``) however loaded the machine, and longer than a shutdown takes."""
MONITOR = ("name: late-monitor\nvalues:\n  mft.care: {action: block}\n"
           "checks: {timeout_s: 10.0}\nstreaming: {mode: monitor}\n")


class PacedUpstream(FakeUpstream):
    """The fake upstream, one word every 50 ms: the client leaves mid-stream."""

    async def stream(self, params: UpstreamParams) -> AsyncIterator[ChatCompletionChunk]:
        async for chunk in super().stream(params):
            yield chunk
            await asyncio.sleep(0.05)


class SlowJudge(KeywordClassifier):
    """The keyword judge, ``JUDGE_S`` slow on a reply that punches."""

    def score(self, items: Sequence[ScoreInput], value_ids: Sequence[str]) -> list[ValueScores]:
        if any("Punch" in item.response for item in items):
            time.sleep(JUDGE_S)
        return super().score(items, value_ids)


def test_a_shutdown_waits_for_the_judgement_of_a_stream_the_client_left(
        bank: PrincipleBank, tmp_path: Path) -> None:
    policy_dir = tmp_path / "policies"
    policy_dir.mkdir()
    shutil.copy(SHIPPED_POLICY_DIR / "default.yaml", policy_dir)
    (policy_dir / "late-monitor.yaml").write_text(MONITOR)
    upstream = PacedUpstream()
    upstream.reply = "Punch him hard. " + " ".join(f"word{i}" for i in range(100))
    services = fake_services(policy_dir, bank, upstream, SlowJudge())
    services.policies = PolicyStore(policy_dir, "late-monitor", 0)
    store = {"path": str(tmp_path / "state.db"), "spool_dir": str(tmp_path / "spool")}
    services.config = GatewayConfig.model_validate({
        "model_list": [{"model_name": "stub", "litellm_params": {"model": "openai/stub"}}],
        "policy_dir": str(policy_dir), "default_policy": "late-monitor",
        "server": {"policy_reload_interval_s": 0}, "store": store})
    body = json.dumps({"model": "stub", "stream": True,
                       "messages": [{"role": "user", "content": "Hi."}]}).encode()
    with ServerThread(create_app(services.config, lambda _: services)) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as client:
            client.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           b"Content-Type: application/json\r\n"
                           b"Content-Length: %d\r\n\r\n" % len(body) + body)
            read = b""
            while b"hard." not in read:
                read += client.recv(65536)
        deadline = time.monotonic() + 10  # the stream is closed: its late judgement runs
        while not upstream.streams_closed_early and time.monotonic() < deadline:
            time.sleep(0.01)
        assert upstream.streams_closed_early == 1
    # the server has shut down, its store closed
    assert isinstance(services.audit, MemoryAudit)
    [record] = services.audit.records
    assert (record.status, record.guard) == ("499", "ok")
    assert record.verdict is not None and record.verdict["violations"] == ["mft.care"]
    spooled = [p for p in (tmp_path / "spool").glob("*") if p.read_bytes()]
    assert spooled == []  # written to the trail before the store closed, not left to a spool
    reopened = open_store(StoreSettings.model_validate(store))
    try:
        trail = reopened.query_audit(AuditQuery()).data
    finally:
        reopened.close()
    assert [(r.data["status"], r.values) for r in trail] == [("499", ("mft.care",))]


def test_a_late_task_that_fails_is_logged_once_and_harms_no_other(
        caplog: pytest.LogCaptureFixture) -> None:
    late, done = LateWork(), []

    async def fails() -> None:
        raise RuntimeError("boom")

    async def works() -> None:
        done.append(True)

    async def main() -> int:
        late.spawn(fails(), "the failing work")
        late.spawn(works(), "the working work")
        return await late.drain(timeout_s=5)

    with caplog.at_level(logging.DEBUG, logger="proxy.late"):
        assert asyncio.run(main()) == 0
    assert done == [True] and len(late) == 0
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == ["the failing work failed: RuntimeError: boom"]


def test_a_judgement_past_the_drain_bound_is_cancelled_and_still_recorded() -> None:
    late, recorded = LateWork(), list[tuple[Judgement, str, str | None]]()

    async def hangs() -> Judgement:
        await asyncio.sleep(3600)
        raise AssertionError("never")

    def finish(reply: Judgement, status: str, code: str | None) -> None:
        recorded.append((reply, status, code))

    async def main() -> int:
        judge_then_finish(late, hangs, finish, "499", "client_closed", "req-test")
        return await late.drain(timeout_s=0.2)

    started = time.monotonic()
    assert asyncio.run(main()) == 1
    assert time.monotonic() - started < 2.0 and len(late) == 0
    assert recorded == [(FAILED_OPEN, "499", "client_closed")]
