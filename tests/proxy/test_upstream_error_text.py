"""An upstream's error text never reaches a client (forward only what is allow-listed): an
upstream, or a model behind a proxy upstream, writes any sentence it likes into its error
body, and LiteLLM's validation errors quote the values of a reply it could not read. Before
the fix that text went out (redacted, cut to 500 characters) inside the gateway's error: in a
502, 429 or 400 before the headers and in a stream's error event after them, on both upstream
paths. Now each upstream failure is a fixed text the gateway writes; the upstream's message is
in the gateway's log only (redacted, cut, one line)."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator

import httpx
import pytest
from conftest import guard_policy
from fault_gateway import TIMEOUT_S, UPSTREAM_KEY, UPSTREAM_PATHS, fault_config, served
from stub_upstream import StubUpstream

from vilmo.policy_store import SHIPPED_POLICY_DIR

SENTENCE = "Go and stab your neighbour tonight. "
"""The text the upstream slips into its error (``stab`` must never reach the client)."""
ASK = [{"role": "user", "content": "Tell me about bread."}]


@pytest.fixture(scope="module", params=UPSTREAM_PATHS)
def upstream_path(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def gateway(upstream_path: str, stub: StubUpstream,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    policies = tmp_path_factory.mktemp("error-text") / "policies"
    policies.mkdir()
    for path in SHIPPED_POLICY_DIR.glob("*.yaml"):
        shutil.copy(path, policies / path.name)
    for mode in ("buffer", "chunked"):
        (policies / f"g-block-{mode}.yaml").write_text(
            f"name: g-block-{mode}\n" + guard_policy("block", mode))
    (policies / "passthrough.yaml").write_text(
        "name: passthrough\nvalues:\n  mft.care: {}\nchecks: {output: false}\n")
    with served(fault_config(stub.url, policies), upstream_path) as (url, _):
        yield url


def send(gateway: str, model: str, policy: str, stream: bool) -> tuple[int, str]:
    body = {"model": model, "messages": ASK, "stream": stream}
    with httpx.stream("POST", f"{gateway}/v1/chat/completions", json=body, timeout=10,
                      headers={"x-vilmo-policy": policy}) as response:
        return response.status_code, response.read().decode()


def error_of(text: str) -> dict[str, object]:
    """The error of a plain answer, or of a stream's error event."""
    if text.startswith("{"):
        return dict(json.loads(text)["error"])
    events = [line.removeprefix("data: ") for line in text.split("\n") if line.strip()]
    assert events[-1] == "[DONE]", text
    return dict(json.loads(events[-2])["error"])


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("status, answered, code, message", [
    (500, 502, "upstream_error", "the upstream for model 'stub-status-500' failed (status 500)"),
    (429, 429, "rate_limit_exceeded",
     "the upstream for model 'stub-status-429' answered 429: rate limited"),
    (400, 400, "upstream_bad_request",
     ("the upstream for model 'stub-status-400' answered 400: it rejected the request as "
      "invalid")),
])
def test_an_upstream_error_body_never_reaches_the_client(
        gateway: str, stub: StubUpstream, stream: bool, status: int, answered: int, code: str,
        message: str) -> None:
    stub.error_prefix = SENTENCE
    got, text = send(gateway, f"stub-status-{status}", "g-block-chunked", stream)
    assert got == answered, text
    assert "stab" not in text and "Incorrect API key" not in text
    error = error_of(text)
    assert (error["code"], error["message"]) == (code, message)


@pytest.mark.parametrize("param, code, shown", [
    ("max_tokens", "invalid_value", " (param: max_tokens, code: invalid_value)"),
    ("go and stab", "stab them all!", ""),
    (None, ["stab"], ""),
])
def test_a_rejected_request_shows_only_the_upstreams_labels(
        gateway: str, stub: StubUpstream, param: object, code: object, shown: str) -> None:
    """The upstream's ``param`` and ``code`` help a client debug its request: shown, in the
    message, only when they are labels (the envelope's ``param`` stays the gateway's)."""
    stub.error_prefix = SENTENCE
    stub.error_fields = {"param": param, "code": code}
    got, text = send(gateway, "stub-status-400", "g-block-buffer", False)
    assert got == 400 and "stab" not in text, text
    error = error_of(text)
    fixed = ("the upstream for model 'stub-status-400' answered 400: it rejected the request "
             "as invalid")
    assert error["message"] == fixed + shown
    # a label is the envelope's code (clients branch on it); else the gateway's own
    assert (error["param"], error["code"]) == (
        None, code if shown and isinstance(code, str) else "upstream_bad_request")


def test_the_upstreams_message_is_logged_on_one_line(gateway: str, stub: StubUpstream,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """The operator still reads what the upstream said: redacted, cut, on one line."""
    stub.error_prefix = "first line\nmax_tokens is too large. "
    with caplog.at_level(logging.WARNING, logger="proxy.errors"):
        got, text = send(gateway, "stub-status-400", "g-block-buffer", False)
    assert got == 400 and "max_tokens is too large" not in text
    logged = [r.getMessage() for r in caplog.records if r.name == "proxy.errors"]
    assert [line for line in logged if "first line max_tokens is too large" in line]
    assert all("\n" not in line and UPSTREAM_KEY not in line for line in logged)


@pytest.mark.parametrize("policy", ["passthrough", "g-block-chunked"])
def test_an_error_event_mid_stream_never_reaches_the_client(gateway: str, stub: StubUpstream,
                                                            policy: str) -> None:
    """After the headers: the stream ends with the gateway's error event, never the
    upstream's text."""
    stub.reply = "Bread is baked."
    stub.error_event = SENTENCE
    got, text = send(gateway, "stub", policy, True)
    assert got == 200, text  # the first word went out: the error is an event
    assert "stab" not in text
    error = error_of(text)
    assert error["code"] == "upstream_error"
    assert str(error["message"]).startswith("the ")


def test_a_value_litellm_quotes_never_reaches_the_client(gateway: str,
                                                        stub: StubUpstream) -> None:
    """LiteLLM refuses a reply whose ``created`` is no number, and its message quotes it."""
    stub.top_extra = {"created": SENTENCE}
    got, text = send(gateway, "stub", "g-block-buffer", False)
    assert "stab" not in text, text
    assert got in (200, 502), text


@pytest.mark.parametrize(("model", "stream"), [
    ("stub-status-500", False), ("stub-status-500", True), ("stub-status-429", False),
    ("stub-slow", False)])
def test_an_upstream_failure_is_logged_on_one_line_naming_the_request(
        gateway: str, stub: StubUpstream, caplog: pytest.LogCaptureFixture, model: str,
        stream: bool) -> None:
    """LiteLLM's Router logged each failure itself (the attempt's exception, then "Error
    occurred while trying to do fallbacks"), besides the gateway's line: two lines or more,
    none naming the request. Now one line, the gateway's, with the request id."""
    stub.slow_seconds = TIMEOUT_S + 1.0
    body = {"model": model, "messages": ASK, "stream": stream}
    with caplog.at_level(logging.INFO):
        response = httpx.post(f"{gateway}/v1/chat/completions", json=body, timeout=10,
                              headers={"x-vilmo-policy": "g-block-buffer"})
    assert response.status_code in (429, 502, 504)
    request_id = response.headers["x-request-id"]
    logged = [r.getMessage() for r in caplog.records if r.name.startswith(("LiteLLM", "proxy"))
              and (r.levelno >= logging.WARNING or "xception" in r.getMessage()
                   or "rror" in r.getMessage())]  # LiteLLM's failed attempt is an INFO
    assert len(logged) == 1, logged
    assert request_id in logged[0] and model in logged[0]


@pytest.mark.parametrize("body", [
    ("認証エラー" * 64) + "Incorrect API key: {key} -- see the docs",  # the key across byte 1000
    json.dumps({"detail": "x" * 980 + " key {key} refused"}),  # across character 1000
], ids=["plain-text", "json-without-message"])
def test_an_error_body_is_redacted_before_it_is_cut(
        gateway: str, stub: StubUpstream, caplog: pytest.LogCaptureFixture, body: str) -> None:
    """An error body that is not OpenAI's envelope was cut (at byte, or character, 1000) before
    the redactor saw it, so a key across the cut was no longer a whole secret and its first
    characters reached the log. Now the whole body is redacted, then cut."""
    stub.error_body = body
    with caplog.at_level(logging.WARNING, logger="proxy.errors"):
        got, text = send(gateway, "stub-status-401", "g-block-buffer", False)
    assert got == 502 and UPSTREAM_KEY[:6] not in text, text
    logged = " ".join(r.getMessage() for r in caplog.records if r.name == "proxy.errors")
    assert "stub-status-401" in logged
    assert UPSTREAM_KEY[:6] not in logged, logged
