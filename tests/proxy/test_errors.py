"""Every error is an OpenAI envelope with the right status, and none breaks the gateway."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from conftest import ADMIN_KEY, BOTH_PATHS, METRICS_KEY, TEAM_KEY, UPSTREAM_SECRET
from openai.types.chat import ChatCompletionMessageParam
from stub_upstream import StubUpstream

pytestmark = BOTH_PATHS  # LiteLLM's Router and the direct path pass the same tests

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello there."}]
AUTH = {"Authorization": f"Bearer {TEAM_KEY}"}
METRICS = {"Authorization": f"Bearer {METRICS_KEY}"}


def post(gateway: str, body: Any = None, *, content: bytes | None = None,
         headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{gateway}/chat/completions", json=body, content=content,
                      headers=AUTH if headers is None else headers, timeout=30)


def assert_envelope(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    return dict(error)


def test_invalid_json_is_400(gateway: str) -> None:
    response = post(gateway, content=b'{"model": "stub", "messages": [', headers={
        **AUTH, "content-type": "application/json"})
    assert_envelope(response, 400, "invalid_json")


@pytest.mark.parametrize("body, param", [
    ({"model": "stub"}, "messages"),
    ({"model": "stub", "messages": []}, "messages"),
    ({"model": "stub", "messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
    ({"messages": MESSAGES}, "model"),
    ([1, 2, 3], None),
])
def test_schema_errors_are_400_naming_the_field(gateway: str, body: Any, param: str | None,
                                                ) -> None:
    error = assert_envelope(post(gateway, body), 400)
    assert error["param"] == param


def test_unknown_model_is_404(gateway: str) -> None:
    error = assert_envelope(post(gateway, {"model": "gpt-nope", "messages": MESSAGES}), 404,
                            "model_not_found")
    assert error["param"] == "model"


def test_missing_and_bad_keys_are_401(gateway: str) -> None:
    assert_envelope(post(gateway, {"model": "stub", "messages": MESSAGES}, headers={}), 401,
                    "invalid_api_key")
    assert_envelope(post(gateway, {"model": "stub", "messages": MESSAGES},
                         headers={"Authorization": "Bearer sk-wrong"}), 401)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=gateway, api_key="sk-wrong").chat.completions.create(
            model="stub", messages=MESSAGES)


def test_body_too_large_is_413(gateway: str) -> None:
    big = {"model": "stub", "messages": [{"role": "user", "content": "x" * 300_000}]}
    assert_envelope(post(gateway, big), 413)

    def chunks() -> Any:  # no Content-Length: the limit is enforced as the body streams in
        for _ in range(30):
            yield b"x" * 10_000

    response = httpx.post(f"{gateway}/chat/completions", content=chunks(),
                          headers={**AUTH, "content-type": "application/json"})
    assert_envelope(response, 413)


@pytest.mark.parametrize("model, status, sdk_error", [
    ("stub-status-429", 429, openai.RateLimitError),
    ("stub-status-500", 502, openai.InternalServerError),
    ("stub-status-503", 502, openai.InternalServerError),
    ("stub-status-401", 502, openai.InternalServerError),
    ("stub-slow", 504, openai.InternalServerError),
])
def test_upstream_errors_are_mapped(gateway: str, model: str, status: int,
                                    sdk_error: type[Exception]) -> None:
    response = post(gateway, {"model": model, "messages": MESSAGES})
    assert_envelope(response, status)
    assert UPSTREAM_SECRET not in response.text
    client = openai.OpenAI(base_url=gateway, api_key=TEAM_KEY, max_retries=0)
    with pytest.raises(sdk_error):
        client.chat.completions.create(model=model, messages=MESSAGES)


def test_upstream_error_before_first_chunk_keeps_its_status(gateway: str) -> None:
    body = {"model": "stub-status-429", "messages": MESSAGES, "stream": True}
    with httpx.stream("POST", f"{gateway}/chat/completions", json=body, headers=AUTH) as r:
        r.read()
    assert_envelope(r, 429)


def test_error_mid_stream_is_an_event_then_done(gateway: str) -> None:
    body = {"model": "stub-midstream-error", "messages": MESSAGES, "stream": True}
    passthrough = {"Authorization": f"Bearer {ADMIN_KEY}", "X-Vilmo-Policy": "g-allow-monitor"}
    with httpx.stream("POST", f"{gateway}/chat/completions", json=body,
                      headers=passthrough) as r:
        assert r.status_code == 200
        events = [line for line in r.iter_lines() if line]
    assert events[-1] == "data: [DONE]"
    assert '"error"' in events[-2]
    # In buffer mode nothing is sent before the reply is complete: the failure keeps a status.
    with httpx.stream("POST", f"{gateway}/chat/completions", json=body, headers=AUTH) as r:
        r.read()
    assert_envelope(r, 502)


def test_policy_header_needs_permission_and_a_known_policy(gateway: str) -> None:
    body = {"model": "stub", "messages": MESSAGES}
    assert_envelope(post(gateway, body, headers={**AUTH, "X-Vilmo-Policy": "default"}), 403,
                    "policy_override_forbidden")
    error = assert_envelope(post(gateway, body, headers={
        "Authorization": f"Bearer {ADMIN_KEY}", "X-Vilmo-Policy": "no-such-policy"}), 400,
        "policy_not_found")
    assert error["param"] == "X-Vilmo-Policy"


def test_unknown_route_and_method_are_enveloped(gateway: str) -> None:
    assert_envelope(httpx.get(f"{gateway}/nothing-here", headers=AUTH), 404)
    assert_envelope(httpx.get(f"{gateway}/chat/completions", headers=AUTH), 405)


def test_gateway_still_serves_after_errors_and_counts_them(gateway: str,
                                                           stub: StubUpstream) -> None:
    post(gateway, {"model": "stub-status-500", "messages": MESSAGES})
    ok = openai.OpenAI(base_url=gateway, api_key=TEAM_KEY).chat.completions.create(
        model="stub", messages=MESSAGES)
    assert ok.choices[0].message.content == stub.reply
    root = gateway.removesuffix("/v1")
    metrics = httpx.get(f"{root}/metrics", headers=METRICS).text
    assert 'vilmo_requests_total{model="stub-*",policy="strict-care-fairness",' \
           'status="502",stream="false"}' in metrics
    assert 'status="200"' in metrics
    assert "vilmo_instruction_duration_seconds_bucket" in metrics


def test_models_and_health(gateway: str) -> None:
    models = openai.OpenAI(base_url=gateway, api_key=TEAM_KEY).models.list()
    assert [m.id for m in models.data] == ["stub"]  # a pattern (``stub-*``) is no model id
    health = httpx.get(gateway.removesuffix("/v1") + "/healthz",
                       headers={"Authorization": f"Bearer {ADMIN_KEY}"}).json()
    assert health["status"] == "ok"
    assert "default" in health["policies"] and "strict-care-fairness" in health["policies"]
