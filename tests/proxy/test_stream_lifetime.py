"""A client that leaves cancels the upstream call in every mode, and a stream has a total
deadline (issue 12, point 8). Before the fix a buffered stream read the upstream to its end
after the client had gone and audited status 200; a plain reply did the same; and nothing
bounded a stream that kept sending chunks.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ADMIN_KEY, BOTH_PATHS
from streams import ASK, by_choice, sse
from stub_upstream import StubUpstream

pytestmark = BOTH_PATHS  # LiteLLM's Router and the direct path pass the same tests

LONG = " ".join(f"word{i}" for i in range(60))
SENTENCES = " ".join(f"Sentence {i} is calm." for i in range(30))


def audit_length(policy_dir: Path) -> int:
    """How many records the trail holds now: a test reads only the records after them (the
    trail is shared by the session's gateways, one per upstream path)."""
    path = policy_dir.parent / "audit.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def audit_records(policy_dir: Path, match: Callable[[dict[str, Any]], bool], after: int,
                  wait_s: float = 10.0) -> list[dict[str, Any]]:
    """Audit records written after the first ``after`` that match, polled for up to
    ``wait_s`` seconds."""
    path = policy_dir.parent / "audit.jsonl"
    deadline = time.monotonic() + wait_s
    while True:
        lines = path.read_text().splitlines()[after:] if path.exists() else []
        found = [r for r in map(json.loads, lines) if match(r)]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def eventually(condition: Callable[[], bool], wait_s: float = 10.0) -> bool:
    deadline = time.monotonic() + wait_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def leave_after(gateway: str, policy: str, seconds: float, **body: Any) -> None:
    """Send a request and hang up after ``seconds`` without an answer."""
    request = {"model": "stub", "messages": ASK, **body}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{gateway}/chat/completions", json=request, timeout=seconds, headers={
            "Authorization": f"Bearer {ADMIN_KEY}", "X-Vilmo-Policy": policy})


def streaming_signal(stub: StubUpstream, monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Set once the stub streams its reply's words: its stream is then past its first chunk
    (the role), where a stream closed early is counted (``streams_closed_early``)."""
    started = threading.Event()
    words_of = stub._reply_for  # the stub's one step before its first word

    def reply_for(body: dict[str, Any]) -> str:
        started.set()
        return str(words_of(body))

    monkeypatch.setattr(stub, "_reply_for", reply_for)
    return started


def post_then_leave(gateway: str, policy: str, ready: threading.Event, **body: Any) -> None:
    """Send a request over a socket, and hang up once ``ready`` is set (30 s at most): no
    timing decides whether the gateway was still reading the upstream when the client left."""
    url = httpx.URL(f"{gateway}/chat/completions")
    content = json.dumps({"model": "stub", "messages": ASK, **body}).encode()
    head = (f"POST {url.path} HTTP/1.1\r\nHost: {url.host}\r\n"
            f"Authorization: Bearer {ADMIN_KEY}\r\nX-Vilmo-Policy: {policy}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(content)}\r\n\r\n")
    with socket.create_connection((url.host, url.port)) as client:
        client.sendall(head.encode() + content)
        assert ready.wait(30.0), "the upstream stream never started"


def test_buffered_stream_stops_reading_the_upstream_when_the_client_leaves(
        gateway: str, stub: StubUpstream, policy_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the client left after a fixed 0.6 s, which under load could come before the
    upstream stream began (nothing then to stop) or after the test's own timeout."""
    stub.reply, stub.chunk_delay = " ".join([LONG] * 4), 0.1  # 24 s of upstream stream
    start = audit_length(policy_dir)
    post_then_leave(gateway, "g-leave-buffer", streaming_signal(stub, monkeypatch),
                    stream=True)
    assert eventually(lambda: stub.streams_closed_early == 1) and stub.streams_finished == 0
    records = audit_records(policy_dir, lambda r: r["policy"] == "g-leave-buffer", start)
    assert [r["status"] for r in records] == ["499"]


def test_plain_reply_is_abandoned_when_the_client_leaves(gateway: str, stub: StubUpstream,
                                                         policy_dir: Path) -> None:
    stub.slow_seconds = 3.0
    start = audit_length(policy_dir)
    leave_after(gateway, "g-leave-chunked", 0.5, model="stub-slow")
    records = audit_records(policy_dir, lambda r: r["policy"] == "g-leave-chunked"
                            and not r["stream"], start, wait_s=2.0)  # before the upstream answers
    assert [(r["status"], r["enforced"]) for r in records] == [("499", "abandoned")]


def test_chunked_stream_cancels_the_upstream_when_the_client_leaves(
        gateway: str, stub: StubUpstream, policy_dir: Path) -> None:
    stub.reply, stub.chunk_delay = SENTENCES, 0.05  # six seconds; chunked mode releases some
    body = {"model": "stub", "messages": ASK, "stream": True}
    start = audit_length(policy_dir)
    with httpx.stream("POST", f"{gateway}/chat/completions", json=body, timeout=30, headers={
            "Authorization": f"Bearer {ADMIN_KEY}", "X-Vilmo-Policy": "g-leave-chunked"}) as r:
        for i, _ in enumerate(r.iter_lines()):
            if i > 2:
                break
    assert eventually(lambda: stub.streams_closed_early == 1)
    records = audit_records(policy_dir, lambda r: r["policy"] == "g-leave-chunked"
                            and r["stream"], start)
    # the same code as a plain reply's (before the fix: a stream's 499 had none)
    assert [(r["status"], r["error_code"]) for r in records] == [("499", "client_closed")]
    assert records[0]["enforced"] == "abandoned"  # was null: nothing said what was done


@pytest.mark.parametrize("path", ["chat/completions", "values/check"])
@pytest.mark.parametrize("sent", [b"", b'{"model": "stub", "mess'])
def test_a_client_that_leaves_before_its_body_is_read_is_a_499(
        gateway: str, policy_dir: Path, caplog: pytest.LogCaptureFixture, path: str,
        sent: bytes) -> None:
    """Before the fix reading the body raised Starlette's ``ClientDisconnect``, which reached
    the last resort: a 500 ``internal_error`` in the trail and the metrics, and an
    "unexpected error" logged, for what is only a client that left."""
    url = httpx.URL(f"{gateway}/{path}")
    start = audit_length(policy_dir)
    head = (f"POST {url.path} HTTP/1.1\r\nHost: {url.host}\r\n"
            f"Authorization: Bearer {ADMIN_KEY}\r\nContent-Type: application/json\r\n"
            "Content-Length: 500\r\n\r\n").encode()
    with socket.create_connection((url.host, url.port)) as client:
        client.sendall(head + sent)
        time.sleep(0.3)
    if path == "chat/completions":
        records = audit_records(policy_dir, lambda r: not r["policy"], start)
        assert [(r["status"], r["error_code"]) for r in records] == [("499", "client_closed")]
    else:
        time.sleep(0.5)
    assert not [r for r in caplog.records if "unexpected error" in r.getMessage()]


@pytest.mark.parametrize("mode", ["chunked", "monitor"])
def test_a_stream_past_its_deadline_ends_with_the_error_event(gateway: str, stub: StubUpstream,
                                                              mode: str) -> None:
    stub.reply, stub.chunk_delay = LONG, 0.1  # each chunk is quick; the whole takes 6 s
    status, lines = sse(gateway, f"g-deadline-{mode}")
    assert status == 200 and lines[-1] == "data: [DONE]"
    error = json.loads(lines[-2][6:])["error"]
    assert error["code"] == "stream_timeout" and error["type"] == "timeout_error"
    texts, finishes = by_choice(lines)
    assert texts and LONG not in texts[0] and finishes == {}
    assert eventually(lambda: stub.streams_closed_early == 1) and stub.streams_finished == 0


def test_a_buffered_stream_past_its_deadline_is_a_504(gateway: str, stub: StubUpstream) -> None:
    stub.reply, stub.chunk_delay = LONG, 0.1
    status, lines = sse(gateway, "g-deadline-buffer")
    assert status == 504
    assert json.loads(lines[0])["error"]["code"] == "stream_timeout"
    assert eventually(lambda: stub.streams_closed_early == 1)


@pytest.mark.parametrize(("model", "status", "code"), [
    ("stub-stall", "504", "stream_timeout"), ("stub-midstream-error", "502", "upstream_error")])
def test_a_monitor_stream_that_ends_early_records_the_verdict_of_what_it_sent(
        gateway: str, stub: StubUpstream, policy_dir: Path, model: str, status: str,
        code: str) -> None:
    """Monitor mode judged only after a clean end: the client got "Punch", the deadline (or
    the upstream) ended the stream, and the record said guard off, no verdict."""
    stub.reply = "Punch him hard. Then leave."
    start = audit_length(policy_dir)
    sent, lines = sse(gateway, "g-deadline-monitor", model=model)
    texts, _ = by_choice(lines)
    assert sent == 200 and texts[0].startswith("Punch") and lines[-1] == "data: [DONE]"
    assert json.loads(lines[-2][6:])["error"]["code"] == code
    records = audit_records(policy_dir, lambda r: r["policy"] == "g-deadline-monitor", start)
    assert [(r["status"], r["error_code"], r["guard"]) for r in records] == [
        (status, code, "ok")]
    assert records[0]["verdict"]["violations"] == ["mft.care"]
    assert records[0]["enforced"] is None  # the upstream, not the client, ended it: no whole reply


def test_a_chunked_stream_that_ends_early_records_its_partial_verdicts(
        gateway: str, stub: StubUpstream, policy_dir: Path) -> None:
    """Chunked mode: windows were checked and released before the deadline, and the record
    said guard off, no verdict (only a choice's last check was recorded)."""
    stub.reply, stub.chunk_delay = SENTENCES, 0.05  # 7.5 s; the deadline is at 1 s
    start = audit_length(policy_dir)
    sent, lines = sse(gateway, "g-deadline-chunked")
    texts, finishes = by_choice(lines)
    assert sent == 200 and texts[0].startswith("Sentence 0 is calm.") and finishes == {}
    records = audit_records(policy_dir, lambda r: r["policy"] == "g-deadline-chunked", start)
    assert [(r["status"], r["error_code"], r["guard"]) for r in records] == [
        ("504", "stream_timeout", "ok")]
    assert records[0]["verdict"]["action"] == "allow"


def test_a_monitor_stream_the_client_leaves_records_the_verdict_of_what_it_sent(
        gateway: str, stub: StubUpstream, policy_dir: Path) -> None:
    """Monitor mode judged a stream only when it ended (cleanly or by an error): the client
    read "Punch him hard." and left, and the record said 499, guard off, no verdict."""
    stub.reply, stub.chunk_delay = "Punch him hard. " + LONG, 0.1  # six seconds
    body = {"model": "stub", "messages": ASK, "stream": True}
    start = audit_length(policy_dir)
    read = ""
    with httpx.stream("POST", f"{gateway}/chat/completions", json=body, timeout=30, headers={
            "Authorization": f"Bearer {ADMIN_KEY}", "X-Vilmo-Policy": "g-block-monitor"}) as r:
        for line in r.iter_lines():
            read += line
            if "hard." in read:
                break
    assert eventually(lambda: stub.streams_closed_early == 1) and stub.streams_finished == 0
    records = audit_records(policy_dir, lambda r: r["policy"] == "g-block-monitor", start)
    assert [(r["status"], r["error_code"], r["guard"]) for r in records] == [
        ("499", "client_closed", "ok")]
    assert records[0]["verdict"]["violations"] == ["mft.care"]
    assert records[0]["enforced"] == "abandoned"
