"""The instruction step reads a bounded part of the prompt, in threads of its own, and a failed
step fails open only for a short prompt, visibly.

The review's cases: the step read the whole last user turn (a 420 KB turn cost about 23 s of
CPU: the judge's second look read it window by window), its request was answered 503 at the
timeout while the work went on in the event loop's default executor, and eight such requests
held that executor (the store's calls, every client's steps) for 106 s. Under ``on_error: open``
a padded prompt made the step time out and the gateway dropped the instruction silently
(``x-vilmo-guard: ok``, no principles). Now the step reads the turn's head and tail
(``INSTRUCTION_READ_CHARS``), runs on a lane of its own (``proxy.step_lanes``: a step still
queued when its request times out never runs), and its failure fails closed for a turn over
``checks.fail_open_max_chars``, and is marked ``x-vilmo-guard: error`` (and in the audit
record) when it fails open.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fakes import FakeUpstream, MemoryAudit, fake_services, on_its_cpu_all_along, post_chat

import proxy.guard
import proxy.step_lanes
from proxy.errors import GuardFailed
from proxy.guard import Guard
from proxy.metrics import Metrics
from proxy.outcome import FAILED_INSTRUCTION
from proxy.record import RequestRecord
from vilmo.instruct.instructions import Instruction, prompt_text
from vilmo.instruct.principles import PrincipleBank
from vilmo.policy import Policy
from vilmo.policy_store import SHIPPED_POLICY_DIR
from vilmo.types import Messages

READ_CHARS = 100
FAIL_OPEN_MAX_CHARS = 500
HEAD, MIDDLE, TAIL = "HEAD-OF-TURN ", "MIDDLE-OF-TURN ", " TAIL-OF-TURN"


class RecordingInstructions:
    """Records what each step read; ``release``: each step waits for it (None: none waits)."""

    def __init__(self, release: threading.Event | None = None) -> None:
        self.release = release
        self.read: list[Messages] = []
        self.lock = threading.Lock()

    def generate(self, messages: Messages, policy: Policy) -> Instruction:
        with self.lock:
            self.read.append(messages)
        if self.release is not None:
            self.release.wait(30)
        return Instruction("Be kind.", ("care-1",), "fake", ("mft.care",))


class FailingInstructions:
    def generate(self, messages: Messages, policy: Policy) -> Instruction:
        raise RuntimeError("the step failed")


def open_policy(timeout_s: float = 5.0) -> Policy:
    return Policy.model_validate({
        "name": "open", "values": {"mft.care": {}}, "on_error": "open",
        "instructions": {"generator": "relevance"},
        "checks": {"input": False, "timeout_s": timeout_s,
                   "fail_open_max_chars": FAIL_OPEN_MAX_CHARS}})


def test_the_step_reads_the_head_and_tail_of_a_long_turn(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    monkeypatch.setattr(proxy.guard, "INSTRUCTION_READ_CHARS", READ_CHARS, raising=False)
    turn = HEAD + MIDDLE * 400 + TAIL
    messages: Messages = [{"role": "system", "content": "You help."},
                          {"role": "user", "content": [{"type": "text", "text": turn}]}]
    before = json.dumps(messages)
    generator = RecordingInstructions()
    guard = Guard(lambda p: None, Metrics(["stub"]))  # type: ignore[arg-type,return-value]
    instruction, _ = asyncio.run(guard.instruction(generator, messages, open_policy()))
    assert instruction.principle_ids == ("care-1",)
    [read] = generator.read
    text = prompt_text(read)
    assert len(text) <= READ_CHARS + 2, len(text)
    assert text.startswith(HEAD) and text.endswith(TAIL)
    assert read[0] == messages[0]
    assert json.dumps(messages) == before  # the request's own messages are untouched


def test_abandoned_steps_hold_neither_the_default_executor_nor_a_later_step(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Three steps time out while the first still runs: the loop's default executor (the
    store's calls) stays free, and the two still queued never run (and fail closed, even
    under ``on_error: open``: they failed for the load, ``proxy.step_lanes``)."""
    lane = proxy.step_lanes.Lane("short", 1, None)
    monkeypatch.setattr(proxy.step_lanes, "short_lane", lane)
    monkeypatch.setattr(proxy.step_lanes, "read_thread_times", on_its_cpu_all_along)
    release = threading.Event()
    generator = RecordingInstructions(release)
    guard = Guard(lambda p: None, Metrics(["stub"]))  # type: ignore[arg-type,return-value]
    policy = open_policy(timeout_s=0.2)
    guard.requests_in_flight = 2  # others in flight: no step runs in place
    turn: Messages = [{"role": "user", "content": "Should I call my neighbour?"}]

    async def main() -> tuple[list[object], str]:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(2, thread_name_prefix="test-default"))
        done = await asyncio.gather(*(guard.instruction(generator, turn, policy)
                                      for _ in range(3)), return_exceptions=True)
        try:
            free = await asyncio.wait_for(loop.run_in_executor(None, lambda: "free"), 5)
        except TimeoutError:
            free = "held"
        return list(done), free

    try:
        results, default_executor = asyncio.run(main())
    finally:
        release.set()
    lane.executor.shutdown(wait=True)
    first, *queued = results
    assert isinstance(first, tuple) and first[0] is FAILED_INSTRUCTION  # ran, timed out: open
    assert all(isinstance(q, GuardFailed) and "never started" in q.message for q in queued)
    assert default_executor == "free"
    assert len(generator.read) == 1  # the queued steps were dropped with their requests


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    shutil.copy(SHIPPED_POLICY_DIR / "default.yaml", tmp_path / "default.yaml")
    for mode in ("buffer", "chunked"):
        (tmp_path / f"open-{mode}.yaml").write_text(
            f"name: open-{mode}\nvalues:\n  mft.care: {{action: annotate}}\n"
            f"checks: {{input: false, output: true, fail_open_max_chars: {FAIL_OPEN_MAX_CHARS}}}\n"
            f"streaming: {{mode: {mode}}}\non_error: open\n")
    return tmp_path


def ask(policies: Path, bank: PrincipleBank, turn: str, policy: str, stream: bool = False,
        ) -> tuple[httpx.Response, FakeUpstream, list[RequestRecord]]:
    upstream = FakeUpstream()
    services = fake_services(policies, bank, upstream)
    services.instructions = FailingInstructions()
    audit = MemoryAudit()
    services.audit = audit

    async def main() -> httpx.Response:
        try:
            response: httpx.Response = await post_chat(services, {
                "model": "stub", "stream": stream,
                "messages": [{"role": "user", "content": turn}]}, {"X-Vilmo-Policy": policy})
            return response
        finally:
            await services.guard.aclose()

    return asyncio.run(main()), upstream, audit.records


def test_a_padded_turn_whose_step_fails_never_goes_out_without_its_instruction(
        policies: Path, bank: PrincipleBank) -> None:
    turn = "How do I get back at my neighbour? " + "pad " * 200
    assert len(turn) > FAIL_OPEN_MAX_CHARS
    response, upstream, records = ask(policies, bank, turn, "open-buffer")
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "guard_unavailable" and "fail_open_max_chars" in error["message"]
    assert upstream.calls == []
    assert [r.error_code for r in records] == ["guard_unavailable"]


@pytest.mark.parametrize(("policy", "stream"), [("open-buffer", False), ("open-buffer", True),
                                                ("open-chunked", True)])
def test_a_short_turn_whose_step_fails_open_is_marked_an_error(
        policies: Path, bank: PrincipleBank, policy: str, stream: bool) -> None:
    response, upstream, records = ask(policies, bank, "How do I get back at him?", policy,
                                      stream)
    assert response.status_code == 200, response.text
    assert len(upstream.calls) == 1
    assert response.headers["x-vilmo-guard"] == "error"
    assert response.headers["x-vilmo-principles"] == ""
    assert [r.guard for r in records] == ["error"]
