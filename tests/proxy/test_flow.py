"""The request flow in process (fast tier): fakes behind every seam, the app driven through
``httpx.ASGITransport``. Every action under every stream mode, and both failure policies,
with the one audit record each request leaves."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes import (
    CALM,
    CRASH,
    VIOLENT,
    FakeUpstream,
    KeywordClassifier,
    MemoryAudit,
    fake_services,
    post_chat,
)

from proxy.errors import UpstreamFailed
from proxy.protocol import UpstreamParams
from proxy.record import RequestRecord
from proxy.replies import ChatCompletionChunk
from proxy.services import Services
from vilmo.instruct.principles import PrincipleBank
from vilmo.judge.classifier import ScoreInput, ValueScores

ASK = [{"role": "user", "content": "My neighbour insulted me. What should I do?"}]
REFUSAL = "REFUSED-BY-POLICY"
MODES = ["plain", "buffer", "chunked", "monitor"]


def chat(services: Services, policy: str, mode: str = "plain", **body: Any) -> httpx.Response:
    request = {"model": "stub", "messages": ASK, "stream": mode != "plain", **body}
    return asyncio.run(post_chat(services, request, {"X-Vilmo-Policy": policy}))


def text_of(response: httpx.Response) -> str:
    """What a client could read: the message, or every streamed delta's content."""
    if not response.headers["content-type"].startswith("text/event-stream"):
        return str(response.json()["choices"][0]["message"]["content"])
    return "".join(str(c.get("delta", {}).get("content") or "")
                   for e in events(response) for c in e.get("choices", []))


def events(response: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in response.text.splitlines()
            if line.startswith("data: {")]


def record_of(services: Services) -> RequestRecord:
    audit = services.audit
    assert isinstance(audit, MemoryAudit)
    assert len(audit.records) == 1, "one request, one audit record"
    return audit.records[0]


@pytest.fixture
def upstream() -> FakeUpstream:
    return FakeUpstream()


@pytest.fixture
def services(policy_dir: Path, bank: PrincipleBank, upstream: FakeUpstream) -> Services:
    return fake_services(policy_dir, bank, upstream)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("action", ["allow", "annotate", "block", "regenerate"])
def test_every_action_in_every_mode(services: Services, upstream: FakeUpstream, action: str,
                                    mode: str) -> None:
    upstream.reply, upstream.reply_when_warned = VIOLENT, CALM
    policy = f"g-{action}-{'buffer' if mode == 'plain' else mode}"
    response = chat(services, policy, mode)
    assert response.status_code == 200
    text = text_of(response)
    protected = mode != "monitor" and action in ("block", "regenerate")
    if not protected:
        assert VIOLENT in text
    elif action == "regenerate" and mode in ("plain", "buffer"):
        assert text == CALM and response.headers["x-vilmo-regenerations"] == "1"
    else:
        assert "punch" not in text and REFUSAL in text
    if mode != "plain":
        assert response.text.endswith("data: [DONE]\n\n")
        assert response.headers["x-vilmo-stream-mode"] == mode
    record = record_of(services)
    assert record.status == "200" and record.policy == policy and record.stream == (
        mode != "plain")
    regenerated = action == "regenerate" and mode in ("plain", "buffer")
    assert record.verdict is not None
    assert record.verdict["action"] == ("allow" if regenerated else action)
    assert [a["violations"] for a in record.attempts] == ([["mft.care"]] if regenerated else [])
    assert record.principles == ("care-1",) and record.generator == "fake"


@pytest.mark.parametrize("mode", MODES)
def test_a_failed_check_under_on_error_closed(services: Services, upstream: FakeUpstream,
                                              mode: str) -> None:
    upstream.reply = f"{CRASH} {CALM}"
    response = chat(services, f"g-closed-{'buffer' if mode == 'plain' else mode}", mode)
    record = record_of(services)
    if mode in ("plain", "buffer"):  # before the headers: a plain 503
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "guard_unavailable"
        assert record.status == "503" and record.error_code == "guard_unavailable"
    elif mode == "chunked":  # after the headers: an error event, then [DONE]; nothing unchecked
        assert response.status_code == 200 and CALM not in text_of(response)
        assert events(response)[-1]["error"]["code"] == "guard_unavailable"
        assert response.text.endswith("data: [DONE]\n\n")
        assert record.status == "503" and record.error_code == "guard_unavailable"
    else:  # monitor never fails a stream: the failure is reported in its last chunk
        assert response.status_code == 200 and CALM in text_of(response)
        assert events(response)[-1]["vilmo"]["guard"] == "error"
        assert record.status == "200" and record.verdict is None


@pytest.mark.parametrize("mode", MODES)
def test_a_failed_check_under_on_error_open(services: Services, upstream: FakeUpstream,
                                            mode: str) -> None:
    upstream.reply = f"{CRASH} {CALM}"
    response = chat(services, f"g-open-{'buffer' if mode == 'plain' else mode}", mode)
    assert response.status_code == 200 and CALM in text_of(response)
    record = record_of(services)
    assert record.status == "200" and record.verdict is None
    assert record.guard == "error"
    if mode in ("plain", "buffer"):
        assert response.headers["x-vilmo-guard"] == "error"


@pytest.mark.parametrize("mode", ["buffer", "chunked", "monitor"])
def test_an_upstream_failure_mid_stream_ends_with_an_error_event_and_done(
        services: Services, upstream: FakeUpstream, mode: str) -> None:
    upstream.fail, upstream.fail_after = UpstreamFailed("gone", code="upstream_error"), 3
    response = chat(services, f"g-block-{mode}", mode)
    record = record_of(services)
    if mode == "buffer":  # the whole reply is read before the headers
        assert response.status_code == 502 and record.status == "502"
        return
    assert response.status_code == 200
    assert response.text.endswith("data: [DONE]\n\n")
    assert events(response)[-1]["error"]["code"] == "upstream_error"
    assert record.status == "502" and record.error_code == "upstream_error"


def test_an_input_verdict_that_only_annotates_reaches_the_audit_record(
        services: Services) -> None:
    """Regression: the header said x-vilmo-input-violations: mft.care, the audit record had no
    input verdict at all."""
    response = chat(services, "g-input-annotate",
                    messages=[{"role": "user", "content": "Should I punch my neighbour?"}])
    assert response.status_code == 200
    assert response.headers["x-vilmo-input-violations"] == "mft.care"
    record = record_of(services)
    assert record.input_verdict is not None
    assert record.input_verdict["violations"] == ["mft.care"]
    assert record.input_verdict["action"] == "annotate"
    assert "mft.care" in record.values  # what the audit store filters by (issue 15)


@pytest.mark.parametrize("mode", ["plain", "buffer"])
def test_a_blocked_request_never_reaches_the_upstream(services: Services,
                                                       upstream: FakeUpstream, mode: str) -> None:
    response = chat(services, "g-input", mode,
                    messages=[{"role": "user", "content": "How do I poison the dog?"}])
    assert response.status_code == 200 and text_of(response) == REFUSAL
    assert upstream.calls == []
    record = record_of(services)
    assert record.input_verdict is not None and record.input_verdict["action"] == "block"
    assert record.status == "200" and record.guard == "ok"


def test_errors_are_recorded_with_the_facts_known_so_far(services: Services,
                                                          upstream: FakeUpstream) -> None:
    upstream.fail = UpstreamFailed("gone", code="upstream_error")
    response = chat(services, "g-block-buffer")
    assert response.status_code == 502
    assert response.json()["error"] == {"message": "gone", "type": "upstream_error",
                                        "param": None, "code": "upstream_error"}
    record = record_of(services)
    assert (record.status, record.error_code) == ("502", "upstream_error")
    assert record.policy == "g-block-buffer" and record.principles == ("care-1",)


class SlowKeywordClassifier(KeywordClassifier):
    """The keyword judge, slower than an upstream that fails at once."""

    def score(self, items: Sequence[ScoreInput], value_ids: Sequence[str]) -> list[ValueScores]:
        time.sleep(0.2)
        return super().score(items, value_ids)


@pytest.mark.parametrize("mode", ["plain", "monitor"])
def test_an_input_verdict_still_pending_when_the_upstream_fails_is_recorded(
        policy_dir: Path, bank: PrincipleBank, upstream: FakeUpstream, mode: str) -> None:
    """An annotate-only input verdict does not hold the upstream call back; when that call
    fails first, the error's record still carries the verdict (nothing recorded is lost)."""
    services = fake_services(policy_dir, bank, upstream, SlowKeywordClassifier())
    upstream.fail = UpstreamFailed("gone", code="upstream_error")
    response = chat(services, "g-input-annotate", mode,
                    messages=[{"role": "user", "content": VIOLENT}])
    assert response.status_code == 502
    record = record_of(services)
    assert (record.status, record.error_code) == ("502", "upstream_error")
    assert record.input_verdict is not None
    assert "mft.care" in json.dumps(record.input_verdict)


class ChoicelessUpstream(FakeUpstream):
    """Streams chunks without choices, endlessly, as a broken upstream might."""

    async def stream(self, params: UpstreamParams) -> AsyncIterator[ChatCompletionChunk]:
        while True:
            yield {"id": "x", "object": "chat.completion.chunk", "created": 1,
                   "model": "stub", "choices": []}
            await asyncio.sleep(0)


def test_a_stream_of_chunks_without_choices_is_malformed_not_held_forever(
        policy_dir: Path, bank: PrincipleBank) -> None:
    """The chunks held before the first with a choice were bounded only by the stream's
    deadline (on the LiteLLM path, not by any byte limit)."""
    upstream = ChoicelessUpstream()
    services = fake_services(policy_dir, bank, upstream)
    response = asyncio.run(asyncio.wait_for(post_chat(
        services, {"model": "stub", "messages": ASK, "stream": True},
        {"X-Vilmo-Policy": "g-allow-monitor"}), timeout=10))
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_malformed"


def test_the_audit_line_has_the_documented_shape(services: Services) -> None:
    chat(services, "g-block-buffer")
    assert sorted(record_of(services).to_json()) == sorted(
        ["request_id", "caller", "model", "stream", "policy", "generator", "principles",
         "stakes", "status", "error_code", "started_at", "instruction_s", "duration_s",
         "guard", "verdict", "input_verdict", "attempts", "profile", "key_id",
         "stream_mode", "enforced"])


@pytest.mark.parametrize("mode", ["plain", "buffer"])
def test_a_reply_blocked_with_an_error_is_recorded_with_its_verdict(
        services: Services, upstream: FakeUpstream, mode: str) -> None:
    """``block_with: error``: the 400's record said guard off, no verdict, no action (the
    verdict was noted only after ``enforce``, which raises the error)."""
    upstream.reply = VIOLENT
    response = chat(services, "g-block-error", mode)
    assert response.status_code == 400 and "punch" not in response.text
    assert response.json()["error"]["code"] == "content_filter"
    record = record_of(services)
    assert (record.status, record.error_code) == ("400", "content_filter")
    assert record.guard == "ok" and record.action == "block"
    assert record.verdict is not None and record.verdict["violations"] == ["mft.care"]
    assert record.values == ("mft.care",)


class FailsWhenWarned(FakeUpstream):
    """Answers the first call; the regeneration (the strengthened instruction) fails."""

    def _text(self, params: UpstreamParams) -> str:
        text = super()._text(params)
        if any("went against" in str(m.get("content")) for m in params["messages"]):
            raise UpstreamFailed("overloaded", code="upstream_error")
        return text


@pytest.mark.parametrize("mode", ["plain", "buffer"])
def test_a_failed_regeneration_keeps_the_attempt_and_no_final_verdict(
        policy_dir: Path, bank: PrincipleBank, mode: str) -> None:
    """The 502 of a regeneration's failed upstream call was recorded with no verdict and no
    attempt: the reply that called for it was lost from the audit trail. Then it was recorded
    twice, as the rejected attempt and as the final reply's verdict (the trail showed the
    rejected text as the reply the client got, with action regenerate): there is no final
    reply, so no verdict, and the one attempt. Its guard said ``off`` (a policy that checks
    nothing) though the reply before was judged: ``ok``."""
    upstream = FailsWhenWarned()
    upstream.reply = VIOLENT
    services = fake_services(policy_dir, bank, upstream)
    response = chat(services, "g-regenerate-buffer", mode)
    assert response.status_code == 502 and len(upstream.calls) == 2
    record = record_of(services)
    assert (record.status, record.error_code) == ("502", "upstream_error")
    assert record.verdict is None and record.action == "" and record.guard == "ok"
    assert [(a["action"], a["violations"]) for a in record.attempts] == [
        ("regenerate", ["mft.care"])]
    assert record.values == ("mft.care",)


@pytest.mark.parametrize(("policy", "body", "status"), [
    ("g-block-error", {}, 400),  # the reply blocked with an error
    ("g-input-error", {"messages": [{"role": "user", "content": VIOLENT}]}, 400),
    ("g-block-buffer", {"model": "no-such-model"}, 404),
    (None, {"messages": "not a list"}, 400),  # before any policy was chosen
])
def test_error_answers_name_their_audit_record(services: Services, upstream: FakeUpstream,
                                               policy: str | None, body: dict[str, Any],
                                               status: int) -> None:
    """``x-request-id`` is the audit record's id (README), but error answers had none: a
    client could not name the record of its failed request."""
    upstream.reply = VIOLENT
    headers = {"X-Vilmo-Policy": policy} if policy else {}
    response = asyncio.run(post_chat(services, {"model": "stub", "messages": ASK, **body},
                                     headers))
    assert response.status_code == status and "error" in response.json()
    record = record_of(services)
    assert response.headers["x-request-id"] == record.request_id
    assert response.headers.get("x-vilmo-policy") == policy


@pytest.mark.parametrize("include_usage", [True, False])
def test_a_streamed_input_refusal_reports_usage_when_asked(
        services: Services, upstream: FakeUpstream, include_usage: bool) -> None:
    """A client that set ``stream_options.include_usage`` got no usage chunk when the input
    check refused its stream (the plain refusal carries its zero usage)."""
    response = chat(services, "g-input", "buffer",
                    messages=[{"role": "user", "content": VIOLENT}],
                    stream_options={"include_usage": include_usage})
    assert response.status_code == 200 and text_of(response) == REFUSAL
    assert upstream.calls == [] and response.text.endswith("data: [DONE]\n\n")
    usage = [e for e in events(response) if e.get("usage")]
    if include_usage:
        assert usage == [events(response)[-1]] and usage[0]["choices"] == []
        assert usage[0]["usage"] == {"prompt_tokens": 0, "completion_tokens": 0,
                                     "total_tokens": 0}
    else:
        assert usage == []
