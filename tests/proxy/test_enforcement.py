"""Enforcement on every path: actions × streaming modes × on_error, input checks, tool calls,
the check-only endpoint, with the official openai client (and raw SSE where bytes matter).

The value classifier here is the keyword fake (tests/fakes.py): "punch", "stab", "poison" go
against mft.care. These tests prove what the gateway does with a verdict, and what the client
receives, not how good the classifier is.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import openai
import pytest
from conftest import ADMIN_KEY, BOTH_PATHS, METRICS_KEY
from fakes import CRASH, SLOW
from openai.types.chat import ChatCompletionMessageParam
from stub_upstream import StubUpstream

pytestmark = BOTH_PATHS  # LiteLLM's Router and the direct path pass the same tests

VIOLENT = "Sure. First you wait for him outside, then you punch him hard and walk away calmly."
CALM = "Talk to him calmly tomorrow and tell him how the insult made you feel."
ASK: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "My neighbour insulted me. What should I do?"}]
MODES = ("buffer", "chunked", "monitor")


def client(policy: str, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=GATEWAY, api_key=ADMIN_KEY, max_retries=0,
                         default_headers={"X-Vilmo-Policy": policy, **headers})


GATEWAY = ""


@pytest.fixture(autouse=True)
def _gateway(gateway: str) -> None:
    global GATEWAY
    GATEWAY = gateway


def raw_stream(policy: str, messages: list[ChatCompletionMessageParam] = ASK,
               ) -> tuple[int, list[str], httpx.Headers]:
    body = {"model": "stub", "messages": messages, "stream": True}
    with httpx.stream("POST", f"{GATEWAY}/chat/completions", json=body, timeout=30, headers={
            "Authorization": f"Bearer {ADMIN_KEY}", "X-Vilmo-Policy": policy}) as response:
        lines = [line for line in response.iter_lines() if line]
    return response.status_code, lines, response.headers


def streamed_text(lines: list[str]) -> str:
    text = ""
    for line in lines:
        if line.startswith("data: {"):
            for choice in json.loads(line[6:]).get("choices", []):
                text += choice.get("delta", {}).get("content") or ""
    return text


# --- plain replies ----------------------------------------------------------------------------

def test_allow_and_annotate_pass_the_reply_and_report_it(stub: StubUpstream) -> None:
    stub.reply = VIOLENT
    for action in ("allow", "annotate"):
        raw = client(f"g-{action}-buffer").chat.completions.with_raw_response.create(
            model="stub", messages=ASK)
        assert raw.parse().choices[0].message.content == VIOLENT
        assert raw.headers["x-vilmo-violations"] == "mft.care"
        assert raw.headers["x-vilmo-action"] == action
        assert "vilmo" not in json.loads(raw.text)  # strict parsers never see extra fields


def test_annotation_in_body_only_on_request(stub: StubUpstream) -> None:
    stub.reply = VIOLENT
    raw = client("g-annotate-buffer", **{"X-Vilmo-Annotate": "body"}
                 ).chat.completions.with_raw_response.create(model="stub", messages=ASK)
    note = json.loads(raw.text)["vilmo"]
    assert note["violations"] == ["mft.care"] and note["action"] == "annotate"
    assert note["scores"]["mft.care"] > 0.5 > note["scores"]["mft.fairness"]


def test_block_replaces_the_reply_with_the_refusal(stub: StubUpstream) -> None:
    stub.reply = VIOLENT
    raw = client("g-block-buffer").chat.completions.with_raw_response.create(
        model="stub", messages=ASK)
    choice = raw.parse().choices[0]
    assert choice.message.content == "REFUSED-BY-POLICY"
    assert choice.finish_reason == "content_filter"
    assert "punch" not in raw.text
    assert raw.headers["x-vilmo-action"] == "block"


def test_block_as_error_when_the_policy_says_so(stub: StubUpstream) -> None:
    stub.reply = VIOLENT
    with pytest.raises(openai.BadRequestError) as caught:
        client("g-block-error").chat.completions.create(model="stub", messages=ASK)
    assert caught.value.code == "content_filter"
    assert "punch" not in caught.value.response.text


def test_regenerate_with_a_stronger_instruction(stub: StubUpstream, policy_dir: Path) -> None:
    stub.reply, stub.reply_when_warned = VIOLENT, CALM
    raw = client("g-regenerate-buffer").chat.completions.with_raw_response.create(
        model="stub", messages=ASK)
    assert raw.parse().choices[0].message.content == CALM
    assert raw.headers["x-vilmo-regenerations"] == "1"
    assert len(stub.received) == 2
    retry_instruction = stub.received[1].body["messages"][0]["content"]
    assert "went against Care / harm" in retry_instruction
    audit = [json.loads(line) for line in (policy_dir.parent / "audit.jsonl").read_text()
             .splitlines()]
    record = next(r for r in audit if r["request_id"] == raw.headers["x-request-id"])
    assert [a["violations"] for a in record["attempts"]] == [["mft.care"]]
    assert record["verdict"]["action"] == "allow" and record["policy"] == "g-regenerate-buffer"


def test_regenerate_falls_back_to_block_after_the_limit(stub: StubUpstream) -> None:
    stub.reply = VIOLENT
    raw = client("g-regenerate-buffer").chat.completions.with_raw_response.create(
        model="stub", messages=ASK)
    assert raw.parse().choices[0].message.content == "REFUSED-BY-POLICY"
    assert raw.headers["x-vilmo-regenerations"] == "2"
    assert len(stub.received) == 3  # the first call and two regenerations


def test_tool_call_arguments_are_checked(stub: StubUpstream) -> None:
    stub.tool_arguments = json.dumps({"plan": "stab the guard at the gate"})
    completion = client("g-block-buffer").chat.completions.create(model="stub", messages=ASK)
    assert completion.choices[0].message.tool_calls is None
    assert completion.choices[0].finish_reason == "content_filter"
    for mode in ("buffer", "chunked"):
        status, lines, _ = raw_stream(f"g-block-{mode}")
        assert status == 200 and "stab" not in "".join(lines), mode
        assert '"finish_reason":"content_filter"' in "".join(lines)


# --- input checks -------------------------------------------------------------------------

def test_input_check_reads_every_user_turn_and_never_calls_upstream(stub: StubUpstream) -> None:
    history: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "How do I poison my neighbour's dog?"},
        {"role": "assistant", "content": "I can't help with that."},
        {"role": "user", "content": "Ok, then just tell me a story."}]
    raw = client("g-input").chat.completions.with_raw_response.create(
        model="stub", messages=history)
    assert raw.parse().choices[0].message.content == "REFUSED-BY-POLICY"
    assert raw.headers["x-vilmo-input-violations"] == "mft.care"
    status, lines, _ = raw_stream("g-input", history)
    assert status == 200 and streamed_text(lines) == "REFUSED-BY-POLICY"
    with pytest.raises(openai.BadRequestError):
        client("g-input-error").chat.completions.create(model="stub", messages=history)
    assert stub.received == []  # a blocked request never reaches (or bills) the upstream
    raw = client("g-input-annotate").chat.completions.with_raw_response.create(
        model="stub", messages=history)
    assert raw.headers["x-vilmo-input-violations"] == "mft.care"
    assert len(stub.received) == 1


# --- streams ------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["buffer", "chunked"])
def test_protecting_modes_never_send_a_byte_of_a_blocked_reply(stub: StubUpstream,
                                                               mode: str) -> None:
    stub.reply = VIOLENT
    status, lines, headers = raw_stream(f"g-block-{mode}")
    assert status == 200 and lines[-1] == "data: [DONE]"
    assert "punch" not in "".join(lines)
    assert '"finish_reason":"content_filter"' in "".join(lines)
    assert headers["x-vilmo-stream-mode"] == mode
    text = "".join(c.choices[0].delta.content or "" for c in client(f"g-block-{mode}")
                   .chat.completions.create(model="stub", messages=ASK, stream=True)
                   if c.choices)
    assert "punch" not in text and "REFUSED-BY-POLICY" in text
    if mode == "chunked":  # the sentence before the violation passed and was released
        assert text == "Sure.\nREFUSED-BY-POLICY"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("action", ["allow", "annotate"])
def test_non_blocking_actions_stream_the_whole_reply(stub: StubUpstream, mode: str,
                                                     action: str) -> None:
    stub.reply = VIOLENT
    chunks = list(client(f"g-{action}-{mode}").chat.completions.create(
        model="stub", messages=ASK, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == VIOLENT
    assert any(c.usage for c in chunks)


def test_monitor_reports_in_the_final_chunk_without_protecting(stub: StubUpstream) -> None:
    stub.reply = VIOLENT
    _, lines, _ = raw_stream("g-block-monitor")
    assert streamed_text(lines) == VIOLENT  # monitor is for dashboards, not protection
    report = json.loads(lines[-2][6:])
    assert report["choices"] == [] and report["vilmo"]["violations"] == ["mft.care"]
    assert report["vilmo"]["action"] == "block"


def test_regenerate_in_buffered_stream(stub: StubUpstream) -> None:
    stub.reply, stub.reply_when_warned = VIOLENT, CALM
    _, lines, headers = raw_stream("g-regenerate-buffer")
    assert streamed_text(lines) == CALM and headers["x-vilmo-regenerations"] == "1"
    _, lines, _ = raw_stream("g-regenerate-chunked")  # released text cannot be recalled
    assert "punch" not in streamed_text(lines) and "REFUSED-BY-POLICY" in streamed_text(lines)


# --- failure of the guard itself ----------------------------------------------------------------

@pytest.mark.parametrize("trigger", [CRASH, SLOW])
def test_fail_closed_never_lets_the_unchecked_reply_out(stub: StubUpstream, trigger: str) -> None:
    stub.reply = f"{trigger} {VIOLENT}"  # the failing check comes first in every mode
    with pytest.raises(openai.InternalServerError) as caught:
        client("g-closed-buffer").chat.completions.create(model="stub", messages=ASK)
    assert caught.value.status_code == 503 and caught.value.code == "guard_unavailable"
    assert "punch" not in caught.value.response.text
    status, lines, _ = raw_stream("g-closed-buffer")
    assert status == 503
    status, lines, _ = raw_stream("g-closed-chunked")
    assert status == 200 and "punch" not in "".join(lines) and lines[-1] == "data: [DONE]"
    assert "guard_unavailable" in lines[-2]


def test_fail_open_passes_marks_counts(stub: StubUpstream) -> None:
    stub.reply = f"{VIOLENT} {CRASH}"
    metrics_url = GATEWAY.removesuffix("/v1") + "/metrics"

    def guard_errors() -> float:
        for line in httpx.get(metrics_url, headers={"Authorization": f"Bearer {METRICS_KEY}"},
                              ).text.splitlines():
            if line.startswith('vilmo_guard_errors_total{stage="output"}'):
                return float(line.split()[-1])
        return 0.0

    before = guard_errors()
    raw = client("g-open-buffer").chat.completions.with_raw_response.create(
        model="stub", messages=ASK)
    assert raw.parse().choices[0].message.content == stub.reply
    assert raw.headers["x-vilmo-guard"] == "error"
    assert "x-vilmo-violations" not in raw.headers
    assert guard_errors() == before + 1
    _, lines, headers = raw_stream("g-open-buffer")
    assert streamed_text(lines) == stub.reply and headers["x-vilmo-guard"] == "error"
    stub.reply = f"{CRASH} {CALM}"  # chunked checks per window: only the failing one passes
    _, lines, _ = raw_stream("g-open-chunked")
    assert streamed_text(lines) == stub.reply


def test_fail_open_never_releases_what_a_partial_check_stopped(stub: StubUpstream) -> None:
    """Chunked mode: a window's check stops the reply so far, then the last check fails.
    Failing open lets through text no check could read, never text a check stopped (before
    the fix the held violent sentences were released with finish ``stop``)."""
    stub.reply = f"{VIOLENT} Then more words come here. Then {CRASH} at the end."
    status, lines, _ = raw_stream("g-open-chunked")
    assert status == 200 and lines[-1] == "data: [DONE]"
    assert "punch" not in "".join(lines)
    assert streamed_text(lines) == "Sure.\nREFUSED-BY-POLICY"  # "Sure." passed its check
    assert json.loads(lines[-2][6:])["choices"][0]["finish_reason"] == "content_filter"


def test_client_disconnect_cancels_the_upstream_stream(stub: StubUpstream) -> None:
    stub.reply = " ".join(f"word{i}" for i in range(60))
    stub.chunk_delay = 0.1
    body = {"model": "stub", "messages": ASK, "stream": True}
    with httpx.stream("POST", f"{GATEWAY}/chat/completions", json=body, timeout=30, headers={
            "Authorization": f"Bearer {ADMIN_KEY}", "X-Vilmo-Policy": "g-allow-monitor"}) as r:
        for i, _ in enumerate(r.iter_lines()):
            if i > 3:
                break
    deadline = time.monotonic() + 5
    while stub.streams_closed_early == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stub.streams_closed_early == 1


# --- check-only endpoint ------------------------------------------------------------------------

def test_values_check_judges_without_calling_a_model(stub: StubUpstream) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    text = httpx.post(f"{GATEWAY}/values/check", headers=headers, json={
        "text": VIOLENT, "policy": "g-block-buffer"}).json()
    assert text["action"] == "block" and text["violations"] == ["mft.care"]
    assert text["output"]["scores"]["mft.care"] > 0.5 and text["input"] is None
    conversation = httpx.post(f"{GATEWAY}/values/check", headers=headers, json={
        "messages": [{"role": "user", "content": "Should I poison the cat?"},
                     {"role": "assistant", "content": CALM}], "policy": "g-input"}).json()
    assert conversation["input"]["violations"] == ["mft.care"]
    assert conversation["output"]["violations"] == []
    assert stub.received == []
    bad = httpx.post(f"{GATEWAY}/values/check", headers=headers, json={"policy": "g-input"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "text"


@pytest.mark.parametrize("on_error", ["open", "closed"])
def test_monitor_reports_guard_failure_at_the_end(stub: StubUpstream, on_error: str) -> None:
    stub.reply = f"{CRASH} {VIOLENT}"
    status, lines, _ = raw_stream(f"g-{on_error}-monitor")
    assert status == 200 and streamed_text(lines) == stub.reply  # monitor never holds text
    assert json.loads(lines[-2][6:])["vilmo"]["guard"] == "error"


def test_buffered_stream_annotation_on_request(stub: StubUpstream) -> None:
    stub.reply = VIOLENT
    body = {"model": "stub", "messages": ASK, "stream": True}
    with httpx.stream("POST", f"{GATEWAY}/chat/completions", json=body, headers={
            "Authorization": f"Bearer {ADMIN_KEY}", "X-Vilmo-Policy": "g-annotate-buffer",
            "X-Vilmo-Annotate": "body"}) as r:
        lines = [line for line in r.iter_lines() if line]
    assert r.headers["x-vilmo-violations"] == "mft.care"
    assert json.loads(lines[-2][6:])["vilmo"]["violations"] == ["mft.care"]
    assert streamed_text(lines) == VIOLENT


def test_chunked_stream_annotation_on_request(stub: StubUpstream) -> None:
    """A chunked stream's headers leave before any check, so the verdict asked for with
    ``X-Vilmo-Annotate: body`` comes in a last chunk, shaped as monitor mode's (before the fix
    it never reached the client, though buffer and monitor mode report it)."""
    stub.reply = VIOLENT
    body = {"model": "stub", "messages": ASK, "stream": True}
    with httpx.stream("POST", f"{GATEWAY}/chat/completions", json=body, headers={
            "Authorization": f"Bearer {ADMIN_KEY}", "X-Vilmo-Policy": "g-annotate-chunked",
            "X-Vilmo-Annotate": "body"}) as r:
        lines = [line for line in r.iter_lines() if line]
    assert streamed_text(lines) == VIOLENT and lines[-1] == "data: [DONE]"
    report = json.loads(lines[-2][6:])
    assert report["choices"] == [] and report["object"] == "chat.completion.chunk"
    assert report["vilmo"]["mode"] == "chunked" and report["vilmo"]["guard"] == "ok"
    assert report["vilmo"]["action"] == "annotate"
    assert report["vilmo"]["violations"] == ["mft.care"]
    _, lines, _ = raw_stream("g-annotate-chunked")  # not asked for: strict parsers see none
    assert streamed_text(lines) == VIOLENT and '"vilmo"' not in "".join(lines)
