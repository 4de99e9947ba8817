"""Upstream faults from the stub upstream, over a real server and each upstream path (issue
16, reliability: "both paths pass the same test suite"): LiteLLM's Router and the direct httpx
path (``fault_gateway.UPSTREAM_PATHS``). Each fault gives its documented status, code and
OpenAI envelope, the same on both paths; a stream that fails after its first chunk ends with
an error event and then ``data: [DONE]``; no answer waits past the client's bound; every
request is recorded (its server-side work finished, the upstream stream closed); and
``fallbacks`` serve when the primary fails (on the Router on both paths: a model with
fallbacks stays there by design under ``upstream.direct: auto``).

    fault                 plain   stream, buffer mode   stream, live modes (off, chunked, monitor)
    500                   502     502                   502 (before the first chunk)
    429 + Retry-After     429     429                   429, Retry-After passed on
    past the timeout      504     504                   504 (no first chunk)
    stall mid-stream      -       504                   error event (upstream_timeout), [DONE]
    reset mid-stream      -       502                   error event (upstream_error), [DONE]
    malformed SSE         -       502                   error event (upstream_malformed), [DONE];
                                                        502 if first event
    invalid JSON          502     502                   502 (upstream_malformed)
    no choices            200     502                   502 (upstream_malformed: no finish_reason)
    malformed choices     502     502                   502 (upstream_malformed)
    NaN, Infinity, 1e400  502     502                   error event (upstream_malformed), [DONE];
                                                        502 if in the first chunk
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from conftest import guard_policy
from fault_gateway import TIMEOUT_S, UPSTREAM_KEY, UPSTREAM_PATHS, fault_config, served
from openai.types.chat import ChatCompletionMessageParam
from stub_upstream import StubUpstream

from proxy import routes
from proxy.direct import SplitUpstream, why_not_direct
from proxy.services import Services
from proxy.store import AuditQuery
from proxy.upstream import LiteLLMUpstream
from vilmo.policy_store import SHIPPED_POLICY_DIR

pytestmark = pytest.mark.slow

ASK: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello."}]
CLIENT_BOUND_S = TIMEOUT_S + 6.0
"""No answer may take longer: a hang fails the test with a read timeout."""
LIVE = ["passthrough", "g-block-chunked", "g-block-monitor"]
MODES = ["g-block-buffer", *LIVE]


@dataclass
class Gateway:
    url: str
    services: Services

    @property
    def statuses(self) -> list[tuple[str, str | None]]:
        return [(r.status, r.error_code) for r in self.services.audit.records]  # type: ignore[attr-defined]


@pytest.fixture(scope="module", params=UPSTREAM_PATHS)
def upstream_path(request: pytest.FixtureRequest) -> str:
    """The upstream path under test: ``litellm`` (the Router) or ``direct``."""
    return str(request.param)


@pytest.fixture(scope="module")
def fault_policies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("fault") / "policies"
    target.mkdir()
    for path in SHIPPED_POLICY_DIR.glob("*.yaml"):
        shutil.copy(path, target / path.name)
    for mode in ("buffer", "chunked", "monitor"):
        (target / f"g-block-{mode}.yaml").write_text(
            f"name: g-block-{mode}\n" + guard_policy("block", mode))
    (target / "passthrough.yaml").write_text(
        "name: passthrough\nvalues:\n  mft.care: {}\nchecks: {output: false}\n")
    return target


@pytest.fixture(scope="module")
def faulty(stub: StubUpstream, fault_policies: Path, upstream_path: str) -> Iterator[Gateway]:
    with served(fault_config(stub.url, fault_policies), upstream_path) as (url, services):
        yield Gateway(url, services)


def client(gateway: Gateway, policy: str = "g-block-buffer") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="none", max_retries=0,
                         timeout=CLIENT_BOUND_S, default_headers={"x-vilmo-policy": policy})


def send(gateway: Gateway, model: str, policy: str, stream: bool) -> tuple[httpx.Response, str]:
    """The response and its whole body, read within ``CLIENT_BOUND_S``."""
    body = {"model": model, "messages": ASK, "stream": stream}
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body,
                      timeout=CLIENT_BOUND_S, headers={"x-vilmo-policy": policy}) as response:
        text = response.read().decode()
    return response, text


def assert_envelope(response: httpx.Response, text: str, status: int, code: str) -> str:
    assert response.status_code == status, text
    assert response.headers["content-type"].startswith("application/json")
    error = json.loads(text)["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code
    return str(error["message"])


def assert_error_then_done(response: httpx.Response, text: str, code: str) -> None:
    assert response.status_code == 200, text
    events = [line for line in text.split("\n") if line]
    assert events[-1] == "data: [DONE]"
    error = json.loads(events[-2].removeprefix("data: "))["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code
    assert all('"error"' not in e for e in events[:-2])


def eventually(condition: Callable[[], bool], wait_s: float = 5.0) -> bool:
    deadline = time.monotonic() + wait_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def recorded(gateway: Gateway, *expected: tuple[str, str | None]) -> bool:
    """The last records are ``expected``: every request's server-side work has ended."""
    return eventually(lambda: gateway.statuses[-len(expected):] == list(expected))


@pytest.mark.parametrize("policy", MODES)
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_500_is_502(faulty: Gateway, stub: StubUpstream, policy: str,
                             stream: bool) -> None:
    response, text = send(faulty, "stub-status-500", policy, stream)
    message = assert_envelope(response, text, 502, "upstream_error")
    assert "(status 500)" in message
    assert recorded(faulty, ("502", "upstream_error"))


def test_litellms_advice_to_operators_does_not_reach_clients(
        faulty: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    """LiteLLM appends to the upstream's message which model groups have fallbacks and how to
    configure them: before the fix the client read "Fallbacks are configured for: primary".
    The answer holds none of the upstream's text now; the gateway's log line of it (redacted)
    none of LiteLLM's advice either."""
    with caplog.at_level(logging.WARNING, logger="proxy.errors"):
        _, text = send(faulty, "stub-status-500", "passthrough", False)
    message = json.loads(text)["error"]["message"]
    assert message == "the upstream for model 'stub-status-500' failed (status 500)"
    assert UPSTREAM_KEY not in text
    said = [r.getMessage() for r in caplog.records if r.name == "proxy.errors"]
    assert [line for line in said if "Incorrect API key provided: [redacted]" in line]
    assert not [line for line in said if "primary" in line or "fallback" in line.lower()]


@pytest.mark.parametrize("policy", MODES)
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_429_keeps_its_status_and_retry_after(faulty: Gateway, policy: str,
                                                       stream: bool) -> None:
    response, text = send(faulty, "stub-status-429", policy, stream)
    assert_envelope(response, text, 429, "rate_limit_exceeded")
    assert response.headers["retry-after"] == "7"
    assert recorded(faulty, ("429", "rate_limit_exceeded"))


def test_openai_client_sees_429_and_502(faulty: Gateway) -> None:
    with pytest.raises(openai.RateLimitError) as limited:
        client(faulty).chat.completions.create(model="stub-status-429", messages=ASK)
    assert limited.value.response.headers["retry-after"] == "7"
    with pytest.raises(openai.InternalServerError) as failed:
        client(faulty, "passthrough").chat.completions.create(
            model="stub-status-500", messages=ASK, stream=True)
    assert failed.value.status_code == 502


@pytest.mark.parametrize("policy", MODES)
@pytest.mark.parametrize("stream", [False, True])
def test_an_upstream_past_the_timeout_is_504(faulty: Gateway, stub: StubUpstream, policy: str,
                                             stream: bool) -> None:
    stub.slow_seconds = TIMEOUT_S + 2.5
    response, text = send(faulty, "stub-slow", policy, stream)
    assert_envelope(response, text, 504, "upstream_timeout")
    assert recorded(faulty, ("504", "upstream_timeout"))


@pytest.mark.parametrize("policy", LIVE)
def test_a_stream_that_stalls_ends_with_a_timeout_event_then_done(
        faulty: Gateway, stub: StubUpstream, policy: str) -> None:
    stub.slow_seconds = TIMEOUT_S + 2.5
    response, text = send(faulty, "stub-stall", policy, True)
    assert_error_then_done(response, text, "upstream_timeout")
    assert recorded(faulty, ("504", "upstream_timeout"))
    assert eventually(lambda: stub.closed_early.count("stub-stall") == 1)
    assert stub.streams_finished == 0


def test_a_buffered_stream_that_stalls_is_a_504(faulty: Gateway, stub: StubUpstream) -> None:
    stub.slow_seconds = TIMEOUT_S + 2.5
    response, text = send(faulty, "stub-stall", "g-block-buffer", True)
    assert_envelope(response, text, 504, "upstream_timeout")
    assert eventually(lambda: stub.closed_early.count("stub-stall") == 1)


@pytest.mark.parametrize("policy", LIVE)
def test_a_reset_mid_stream_ends_with_an_error_event_then_done(faulty: Gateway,
                                                               policy: str) -> None:
    response, text = send(faulty, "stub-midstream-error", policy, True)
    assert_error_then_done(response, text, "upstream_error")
    assert recorded(faulty, ("502", "upstream_error"))
    with pytest.raises(openai.APIError) as raised:  # the official client raises on the event
        for _ in client(faulty, policy).chat.completions.create(
                model="stub-midstream-error", messages=ASK, stream=True):
            pass
    assert isinstance(raised.value.body, dict)
    assert raised.value.body["code"] == "upstream_error"


def test_a_buffered_stream_reset_mid_stream_is_a_502(faulty: Gateway) -> None:
    response, text = send(faulty, "stub-midstream-error", "g-block-buffer", True)
    assert_envelope(response, text, 502, "upstream_error")


@pytest.mark.parametrize("policy", LIVE)
def test_malformed_sse_ends_with_an_error_event_then_done(faulty: Gateway, stub: StubUpstream,
                                                          policy: str) -> None:
    stub.chunk_delay = 0.3  # the stub is still streaming when the gateway gives up on it
    response, text = send(faulty, "stub-bad-sse", policy, True)
    assert_error_then_done(response, text, "upstream_malformed")
    assert recorded(faulty, ("502", "upstream_malformed"))
    assert eventually(lambda: stub.closed_early == ["stub-bad-sse"])  # no connection left open


@pytest.mark.parametrize("policy", MODES)
@pytest.mark.parametrize("model", ["stub-bad-sse-first", "stub-invalid-json"])
def test_malformed_first_event_is_a_502(faulty: Gateway, policy: str, model: str) -> None:
    response, text = send(faulty, model, policy, True)
    assert_envelope(response, text, 502, "upstream_malformed")
    assert recorded(faulty, ("502", "upstream_malformed"))


def test_malformed_sse_in_a_buffered_stream_is_a_502(faulty: Gateway) -> None:
    response, text = send(faulty, "stub-bad-sse", "g-block-buffer", True)
    assert_envelope(response, text, 502, "upstream_malformed")


@pytest.mark.parametrize("policy", MODES)
def test_a_reply_that_is_not_json_is_a_502(faulty: Gateway, policy: str) -> None:
    response, text = send(faulty, "stub-invalid-json", policy, False)
    message = assert_envelope(response, text, 502, "upstream_malformed")
    assert "status 500" not in message  # the upstream answered 200 (LiteLLM says 500)
    assert recorded(faulty, ("502", "upstream_malformed"))


def test_a_model_with_fallbacks_stays_on_the_router_on_both_paths(faulty: Gateway,
                                                                   upstream_path: str) -> None:
    """``primary`` is an ``openai/`` model with an ``api_base``, so the direct path would take
    it but for its fallbacks: under ``auto`` it (and ``backup``) stay on LiteLLM's Router,
    which falls back, while the stub's other models go direct."""
    config = faulty.services.config
    primary = next(d for d in config.model_list if d.model_name == "primary")
    assert why_not_direct(primary, config) == "it has fallbacks or is one (LiteLLM falls back)"
    without = config.model_copy(deep=True)
    without.router_settings.pop("fallbacks")
    assert why_not_direct(primary, without) is None  # otherwise direct-eligible
    upstream = faulty.services.upstream.inner  # type: ignore[attr-defined]
    if upstream_path == "direct":
        assert isinstance(upstream, SplitUpstream)
        assert isinstance(upstream.pick("primary"), LiteLLMUpstream)
        assert isinstance(upstream.pick("backup"), LiteLLMUpstream)
        assert upstream.pick("stub-status-500") is upstream.direct
    else:
        assert isinstance(upstream, LiteLLMUpstream)


@pytest.mark.parametrize("policy", MODES)
def test_fallbacks_serve_when_the_primary_fails(faulty: Gateway, stub: StubUpstream,
                                                policy: str) -> None:
    plain = client(faulty, policy).chat.completions.create(model="primary", messages=ASK)
    assert plain.choices[0].message.content == stub.reply
    assert [r.body["model"] for r in stub.received] == ["stub-status-500", "stub-model"]
    words = [chunk.choices[0].delta.content or "" for chunk in client(faulty, policy)
             .chat.completions.create(model="primary", messages=ASK, stream=True)
             if chunk.choices]
    assert "".join(words) == stub.reply
    assert [r.body["model"] for r in stub.received[2:]] == ["stub-status-500", "stub-model"]
    assert recorded(faulty, ("200", None), ("200", None))


def test_the_gateway_serves_after_every_fault(faulty: Gateway, stub: StubUpstream) -> None:
    for model in ("stub-status-500", "stub-midstream-error", "stub-bad-sse", "stub-invalid-json"):
        send(faulty, model, "passthrough", True)
    reply = client(faulty).chat.completions.create(model="stub", messages=ASK)
    assert reply.choices[0].message.content == stub.reply


@pytest.mark.parametrize("policy", MODES)
def test_a_reply_without_choices_passes_and_such_a_stream_is_a_502(faulty: Gateway,
                                                                    policy: str) -> None:
    response, text = send(faulty, "stub-no-choices", policy, False)
    assert response.status_code == 200 and json.loads(text)["choices"] == []
    response, text = send(faulty, "stub-no-choices", policy, True)
    message = assert_envelope(response, text, 502, "upstream_malformed")
    assert "finish_reason" in message
    assert recorded(faulty, ("200", None), ("502", "upstream_malformed"))


MALFORMED_CHOICES: dict[str, object] = {
    "not a list": {"index": 0, "message": {"content": "Hi."}},
    "not an object": ["oops"],
    "null": [None],
    "index not a number": [{"index": "a", "message": {"content": "Hi."}}],
    "message not an object": [{"index": 0, "message": "Hi."}],
    "one index twice": [{"index": 0, "message": {"content": "Hi."}},
                        {"index": 0, "message": {"content": "Ho."}}],
}
"""Choices the gateway cannot read as choices (before: a 500 ``internal_error`` on the direct
path, a crash reading them); two under one index would have had only one checked."""
LITELLM_STREAMS_THEM = ("index not a number", "one index twice")
"""Those LiteLLM's Router passes on in a stream's chunks (it fails on the others itself), and
reads in a reply, numbering its choices by their place."""


@pytest.mark.parametrize("policy", MODES)
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("choices", list(MALFORMED_CHOICES))
@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")
def test_malformed_choices_are_a_502(faulty: Gateway, stub: StubUpstream, upstream_path: str,
                                     policy: str, stream: bool, choices: str) -> None:
    stub.raw_choices = MALFORMED_CHOICES[choices]
    response, text = send(faulty, "stub", policy, stream)
    if upstream_path != "direct" and not stream and choices in LITELLM_STREAMS_THEM:
        assert response.status_code == 200, text  # LiteLLM numbers a reply's choices by place
        assert [c["index"] for c in json.loads(text)["choices"]] == list(
            range(len(MALFORMED_CHOICES[choices])))  # type: ignore[arg-type]
    elif upstream_path != "direct" and stream and choices not in LITELLM_STREAMS_THEM:
        # LiteLLM's stream wrapper fails on the rest itself (an AttributeError, which cannot
        # be told from a fault of its own): a 502, never a 500
        assert response.status_code == 502, text
        assert json.loads(text)["error"]["code"] in ("upstream_error", "upstream_unreachable")
    else:  # the gateway's own check, or LiteLLM's reply converter (before: upstream_error).
        # Its pydantic warnings are warnings, as in production, not errors as under pytest
        assert_envelope(response, text, 502, "upstream_malformed")
        assert recorded(faulty, ("502", "upstream_malformed"))


def test_an_upstream_failure_is_logged_on_one_line(faulty: Gateway, upstream_path: str) -> None:
    """LiteLLM's Router logged each failure over six lines (advice on fallbacks, "Debug
    Information: Cooldown Deployments=[]") before the fix. The gateway logs what the upstream
    said (the client's 502 holds none of it) on one line, on both paths; nothing may log
    more."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    loggers = [logging.getLogger("LiteLLM Router"), logging.getLogger()]
    keep = Keep()
    for logger in loggers:
        logger.addHandler(keep)
    try:
        send(faulty, "stub-status-500", "passthrough", False)
    finally:
        for logger in loggers:
            logger.removeHandler(keep)
    assert all("\n" not in line for line in lines)
    said = [line for line in lines if "the upstream for model 'stub-status-500'" in line]
    assert len(said) == 1 and "Incorrect API key provided" in said[0]
    assert upstream_path == "litellm" or lines == said  # the direct path: the gateway's only
    assert all(UPSTREAM_KEY not in line for line in lines)


def reply_text(text: str, stream: bool) -> str:
    """The first choice's content, from a reply or from a stream's events."""
    if not stream:
        return str(json.loads(text)["choices"][0]["message"]["content"])
    events = [json.loads(line.removeprefix("data: ")) for line in text.split("\n")
              if line.startswith("data: {")]
    return "".join(c["delta"].get("content") or "" for e in events for c in e.get("choices", []))


def stored_reply(gateway: Gateway) -> object:
    """The reply text in the store's newest audit record (what the judge read)."""
    store = gateway.services.store
    assert store is not None and store.audit.flush()
    return store.query_audit(AuditQuery(limit=1)).data[0].data["reply"]


@pytest.mark.parametrize("policy", MODES)
@pytest.mark.parametrize("stream", [False, True])
def test_a_lone_surrogate_from_the_upstream_becomes_a_replacement_character(
        faulty: Gateway, stub: StubUpstream, policy: str, stream: bool) -> None:
    """``"\\ud800"`` is valid JSON but no character: before the fix the audit writer's thread
    died on it (every later record stayed queued), and a plain reply was a 500 recorded as a
    200. Now the client, the judge and the trail all get U+FFFD in its place."""
    stub.reply = "Bread \ud800 is nice."
    response, text = send(faulty, "stub", policy, stream)
    assert response.status_code == 200, text
    assert reply_text(text, stream) == "Bread \ufffd is nice."
    assert recorded(faulty, ("200", None))
    if policy != "passthrough":  # the reply was judged: its text is in the trail
        assert stored_reply(faulty) == {"text": "Bread \ufffd is nice.", "values": []}
    stub.reply = StubUpstream.reply
    response, text = send(faulty, "stub", policy, stream)  # the trail goes on
    assert response.status_code == 200 and recorded(faulty, ("200", None), ("200", None))
    assert faulty.services.store is not None and faulty.services.store.audit.flush()


def test_a_lone_surrogate_in_an_upstream_error_is_still_a_502(faulty: Gateway,
                                                               stub: StubUpstream,
                                                               upstream_path: str) -> None:
    """Before the fix a 500 ``internal_error``: the direct path's envelope could not be
    encoded, and LiteLLM's Router fails on such a message with a ``UnicodeEncodeError``."""
    stub.error_prefix = "Broken \udc00: "
    response, text = send(faulty, "stub-status-500", "g-block-buffer", False)
    code = "upstream_error" if upstream_path == "direct" else "upstream_malformed"
    message = assert_envelope(response, text, 502, code)
    assert "\udc00" not in message and "Broken" not in message  # the upstream's: logged only
    assert recorded(faulty, ("502", code))


def strict_events(text: str) -> list[dict[str, Any]]:
    """A stream's events as a client's strict JSON parser reads them (no NaN, no Infinity)."""
    def refuse(word: str) -> object:
        raise AssertionError(f"{word} is no JSON")

    return [json.loads(line.removeprefix("data: "), parse_constant=refuse)
            for line in text.split("\n") if line.startswith("data: {")]


NOT_FINITE = ["NaN", "Infinity", "-Infinity", "1e400"]
"""Numbers Python's json reads (``1e400`` as inf) and no client can: ``json.dumps`` writes
them back as ``NaN``/``Infinity``, which are no JSON."""


@pytest.mark.parametrize("policy", MODES)
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("number", NOT_FINITE)
def test_a_number_that_is_not_finite_is_a_502(faulty: Gateway, stub: StubUpstream, policy: str,
                                              stream: bool, number: str) -> None:
    """Before the fix a reply holding one was a 500 ``internal_error`` (it could not be sent),
    and a stream relayed it (the direct path its bytes as they came), invalid JSON for every
    client; now it is refused where upstream JSON enters, on both paths. In a live stream it
    comes after the first word: an error event once the headers are out."""
    stub.bad_number = number
    response, text = send(faulty, "stub", policy, stream)
    if stream and policy in LIVE:
        assert_error_then_done(response, text, "upstream_malformed")
        message = strict_events(text)[-1]["error"]["message"]
    else:
        message = assert_envelope(response, text, 502, "upstream_malformed")
    assert "not finite" in message  # the gateway's check, on both paths
    assert recorded(faulty, ("502", "upstream_malformed"))


@pytest.mark.parametrize("policy", MODES)
def test_a_number_that_is_not_finite_in_the_first_chunk_is_a_502(
        faulty: Gateway, stub: StubUpstream, policy: str) -> None:
    stub.raw_choices = [{"index": 0, "finish_reason": None,
                         "message": {"role": "assistant", "content": "Hi."},
                         "logprobs": {"content": [{"token": "Hi", "logprob": float("nan"),
                                                   "bytes": None, "top_logprobs": []}]}}]
    response, text = send(faulty, "stub", policy, True)
    assert_envelope(response, text, 502, "upstream_malformed")
    assert recorded(faulty, ("502", "upstream_malformed"))


def test_a_reply_that_cannot_be_sent_is_recorded_as_the_500_it_is(
        faulty: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reply whose response cannot be made is recorded as the 500 the client gets: the
    record said 200 before the fix, as it was made before the response. An upstream's NaN
    was such a reply; it is refused now (above), so here the response fails to be made."""
    def unsendable(*args: object, **kwargs: object) -> None:
        raise ValueError("Out of range float values are not JSON compliant")

    monkeypatch.setattr(routes, "JSONResponse", unsendable)
    response, text = send(faulty, "stub", "g-block-buffer", False)
    assert_envelope(response, text, 500, "internal_error")
    assert recorded(faulty, ("500", "internal_error"))
