"""What a client may not do to the gateway (issue 12): steer the upstream call, read the
upstream's secrets, crash a worker, grow the metrics, or read the gateway's configuration.

The gateways here run with a config of their own: a model that allows ``top_k``, a model
whose upstream refuses the gateway's key (so LiteLLM cools it down), a header secret, and a
key bound to a policy that does not exist."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from conftest import (
    ADMIN_KEY,
    BOTH_PATHS,
    METRICS_KEY,
    TEAM_KEY,
    UPSTREAM_SECRET,
    gateway_config_dict,
)
from fakes import KeywordClassifier
from openai.types.chat import ChatCompletionMessageParam
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient
from stub_upstream import ServerThread, StubUpstream

from proxy.errors import Redactor
from vilmo.policy_store import SHIPPED_POLICY_DIR

pytestmark = BOTH_PATHS  # LiteLLM's Router and the direct path pass the same tests

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello there."}]
AUTH = {"Authorization": f"Bearer {TEAM_KEY}"}
METRICS = {"Authorization": f"Bearer {METRICS_KEY}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
LOST_KEY = "sk-lost-policy-0123456789"
HEADER_SECRET = "hdr-secret-4242"


def secure_config(stub_url: str, root: Path, upstream_path: str = "direct", **overrides: Any,
                  ) -> dict[str, Any]:
    policies = root / "policies"
    policies.mkdir(exist_ok=True)
    shutil.copy(SHIPPED_POLICY_DIR / "default.yaml", policies / "default.yaml")
    config = gateway_config_dict(stub_url, policies, upstream_path)
    params = {"api_base": f"{stub_url}/v1", "api_key": UPSTREAM_SECRET}
    config["model_list"] = [
        *config["model_list"],
        {"model_name": "knobs", "allowed_params": ["top_k"],
         "litellm_params": {"model": "openai/stub-knobs", **params}},
        {"model_name": "broken", "litellm_params": {"model": "openai/stub-status-401", **params}},
        {"model_name": "leaky", "litellm_params": {
            "model": "openai/stub-status-500", **params,
            "extra_headers": {"X-Upstream-Token": HEADER_SECRET}}},
    ]
    config["auth"]["keys"][0]["policy"] = "default"
    config["auth"]["keys"].append(
        {"key": LOST_KEY, "name": "lost", "policy": "gone"})
    config["audit"] = {"path": str(root / "audit.jsonl")}
    return {**config, **overrides}


def serve(config: dict[str, Any]) -> ServerThread:
    from proxy.app import create_app
    from proxy.services import build_services
    from proxy.settings import GatewayConfig

    classifier = KeywordClassifier()
    app = create_app(GatewayConfig.model_validate(config),
                     lambda c: build_services(c, lambda policy: classifier))
    return ServerThread(app)


@pytest.fixture(scope="module")
def attacker() -> Iterator[StubUpstream]:
    """A second upstream standing for the attacker's host: it must never be called."""
    upstream = StubUpstream()
    with ServerThread(upstream.app()) as server:
        upstream.url = server.url
        yield upstream


@pytest.fixture(scope="module")
def secure_root(tmp_path_factory: pytest.TempPathFactory, upstream_path: str) -> Path:
    return tmp_path_factory.mktemp(f"secure-{upstream_path}")


@pytest.fixture(scope="module")
def secure(stub: StubUpstream, secure_root: Path, upstream_path: str,
           real_models: None) -> Iterator[str]:
    with serve(secure_config(stub.url, secure_root, upstream_path)) as server:
        yield f"{server.url}/v1"


@pytest.fixture(scope="module")
def strict(stub: StubUpstream, tmp_path_factory: pytest.TempPathFactory, upstream_path: str,
           real_models: None) -> Iterator[str]:
    root = tmp_path_factory.mktemp("strict")
    config = secure_config(stub.url, root, upstream_path, strict_params=True)
    config["server"] = {**config["server"], "max_n": 2, "max_tokens": 100}
    config["auth"] = {**config["auth"], "public_paths": ["/healthz", "/metrics"]}
    with serve(config) as server:
        yield f"{server.url}/v1"


def post(gateway: str, body: Any = None, *, content: bytes | None = None,
         headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{gateway}/chat/completions", json=body, content=content,
                      headers={"content-type": "application/json",
                               **(AUTH if headers is None else headers)}, timeout=30)


def error_of(response: httpx.Response, status: int, code: str | None = None,
             ) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if code is not None:
        assert error["code"] == code, error
    return dict(error)


# --- 1. the client cannot steer the upstream call -------------------------------------------

STEERING = {"api_base": "ATTACKER/v1", "base_url": "ATTACKER/v1", "api_key": "sk-attacker-key",
            "extra_headers": {"X-Stolen": "yes"}, "headers": {"X-Stolen": "yes"},
            "mock_response": "MOCKED", "timeout": 0.001, "num_retries": 20,
            "custom_llm_provider": "openai", "extra_body": {"injected": True}, "vendor_knob": 1}


def steering(attacker: StubUpstream) -> dict[str, Any]:
    steered: dict[str, Any] = json.loads(json.dumps(STEERING).replace("ATTACKER", attacker.url))
    return steered


def test_client_cannot_steer_the_upstream_call(secure: str, stub: StubUpstream,
                                               attacker: StubUpstream) -> None:
    client = openai.OpenAI(base_url=secure, api_key=TEAM_KEY, max_retries=0)
    reply = client.chat.completions.create(model="stub", messages=MESSAGES,
                                           extra_body=steering(attacker))
    assert reply.choices[0].message.content == stub.reply  # not "MOCKED": the upstream answered
    assert attacker.received == []
    assert len(stub.received) == 1
    assert stub.last.headers["authorization"] == f"Bearer {UPSTREAM_SECRET}"
    assert "x-stolen" not in stub.last.headers
    assert not set(STEERING) & set(stub.last.body)
    assert "injected" not in stub.last.body


def test_client_retries_do_not_multiply_upstream_calls(secure: str, stub: StubUpstream) -> None:
    response = post(secure, {"model": "stub-status-500", "messages": MESSAGES,
                             "num_retries": 3, "max_retries": 3})
    error_of(response, 502)
    assert len(stub.received) == 1  # router_settings say num_retries: 0; the client may not


def test_streams_are_not_steered_either(secure: str, stub: StubUpstream,
                                        attacker: StubUpstream) -> None:
    body = {"model": "stub", "messages": MESSAGES, "stream": True, **steering(attacker)}
    with httpx.stream("POST", f"{secure}/chat/completions", json=body, headers=AUTH) as r:
        text = "".join(r.iter_text())
    assert r.status_code == 200 and "MOCKED" not in text
    assert attacker.received == [] and len(stub.received) == 1


def test_allowed_params_reach_only_their_model(secure: str, stub: StubUpstream) -> None:
    post(secure, {"model": "knobs", "messages": MESSAGES, "top_k": 3, "seed": 7})
    assert stub.last.body["top_k"] == 3 and stub.last.body["seed"] == 7
    post(secure, {"model": "stub", "messages": MESSAGES, "top_k": 3})
    assert "top_k" not in stub.last.body


def test_only_openai_tool_types_are_accepted(secure: str, stub: StubUpstream) -> None:
    mcp = {"type": "mcp", "server_label": "x", "server_url": "litellm_proxy/mcp/x"}
    error = error_of(post(secure, {"model": "stub", "messages": MESSAGES, "tools": [mcp]}), 400)
    assert error["param"] == "tools.0.type"
    assert stub.received == []


def test_openai_metadata_reaches_the_upstream(secure: str, stub: StubUpstream) -> None:
    client = openai.OpenAI(base_url=secure, api_key=TEAM_KEY)
    client.chat.completions.create(model="stub", messages=MESSAGES,
                                   metadata={"project": "x"}, store=True)
    assert stub.last.body["metadata"] == {"project": "x"} and stub.last.body["store"] is True


def test_strict_params_refuses_unknown_fields(strict: str, stub: StubUpstream) -> None:
    client = openai.OpenAI(base_url=strict, api_key=TEAM_KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="stub", messages=MESSAGES,
                                       extra_body={"api_base": "http://127.0.0.1:1/v1"})
    assert caught.value.code == "unsupported_parameter"
    assert caught.value.param == "api_base"
    assert stub.received == []
    ok = post(strict, {"model": "knobs", "messages": MESSAGES, "top_k": 3})
    assert ok.status_code == 200 and stub.last.body["top_k"] == 3
    error_of(post(strict, {"model": "stub", "messages": MESSAGES, "top_k": 3}), 400,
             "unsupported_parameter")


# --- 5. no part of a secret reaches the client ----------------------------------------------

def fragments(secret: str, size: int = 6) -> list[str]:
    """Its pieces that are not plain words (the key has "upstream" in it, the message too)."""
    pieces = [secret[i:i + size] for i in range(len(secret) - size + 1)]
    return [p for p in pieces if not p.isalpha()]


def upstream_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The gateway's log lines of what upstreams said (``proxy.errors.upstream_said``)."""
    return [r.getMessage() for r in caplog.records if r.name == "proxy.errors"]


@pytest.mark.parametrize("model, status, lead", [
    ("stub-status-400", 400, "litellm.BadRequestError: OpenAIException - "),
    ("stub-status-500", 502, ("litellm.InternalServerError: InternalServerError: "
                              "OpenAIException - ")),
])
def test_a_key_across_the_cut_is_redacted(secure: str, stub: StubUpstream, model: str,
                                          status: int, lead: str, upstream_path: str,
                                          caplog: pytest.LogCaptureFixture) -> None:
    """The upstream's message is in the log only (never in the answer), redacted before it is
    cut: no piece of a key that crosses the cut survives there."""
    if upstream_path == "direct":  # the upstream's message as it sent it, with no lead
        lead = ""
    before_key = len(lead) + len("Incorrect API key provided: ")
    for start in (475, 485, 495):  # the key crosses the 500-character cut at several places
        stub.error_prefix = "e" * (start - before_key)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="proxy.errors"):
            response = post(secure, {"model": model, "messages": MESSAGES})
        error_of(response, status)
        assert "Incorrect API key" not in response.text and "eeee" not in response.text
        lines = upstream_lines(caplog)
        assert lines and all("Incorrect API key" in line for line in lines)
        assert not [f for line in lines for f in fragments(UPSTREAM_SECRET) if f in line], lines


def test_secrets_in_extra_headers_are_redacted(secure: str,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """The upstream echoes the key and a header secret: neither is in the answer (which
    holds none of the upstream's text) nor in the log line of what it said."""
    with caplog.at_level(logging.WARNING, logger="proxy.errors"):
        response = post(secure, {"model": "leaky", "messages": MESSAGES})
    error_of(response, 502)
    assert HEADER_SECRET not in response.text and UPSTREAM_SECRET not in response.text
    assert "Incorrect API key" not in response.text
    lines = upstream_lines(caplog)
    assert lines and all("[redacted]" in line for line in lines)
    assert not [line for line in lines if HEADER_SECRET in line or UPSTREAM_SECRET in line]


def test_short_secrets_are_redacted_as_whole_tokens() -> None:
    redact = Redactor(["k3y", "sk-long-secret-123", "none"])
    assert redact("bad key k3y; k3yboard") == "bad key [redacted]; k3yboard"
    assert redact.cut("x" * 490 + "sk-long-secret-123") == ("x" * 490 + "[redacted]")[:500]
    assert redact("none of it") == "none of it"  # the gateway's placeholder key is no secret


# --- 7. failures are mapped, with one log line ----------------------------------------------

def test_cooldown_after_an_upstream_401_is_503_with_retry_after(secure: str,
                                                               upstream_path: str) -> None:
    first = post(secure, {"model": "broken", "messages": MESSAGES})
    error_of(first, 502)
    if upstream_path == "direct":  # no cooldown there (LiteLLM's): each call is the upstream's
        error_of(post(secure, {"model": "broken", "messages": MESSAGES}), 502, "upstream_error")
        return
    cooling = post(secure, {"model": "broken", "messages": MESSAGES})
    error = error_of(cooling, 503, "upstream_unavailable")
    assert int(cooling.headers["retry-after"]) >= 1
    assert "cooldown_list" not in error["message"]
    with pytest.raises(openai.InternalServerError):
        openai.OpenAI(base_url=secure, api_key=TEAM_KEY, max_retries=0).chat.completions.create(
            model="broken", messages=MESSAGES)


@pytest.mark.parametrize("depth", [100, 90_000])
def test_deep_nesting_is_400(secure: str, depth: int) -> None:
    body = ('{"model": "stub", "messages": [{"role": "user", "content": "hi"}], "tools": '
            + "[" * depth + "]" * depth + "}")
    error_of(post(secure, content=body.encode()), 400, "invalid_json")


@pytest.mark.parametrize("field, value, param", [
    ("temperature", "NaN", "temperature"),
    ("top_p", "Infinity", "top_p"),
    ("presence_penalty", "-Infinity", "presence_penalty"),
    ("frequency_penalty", "1e400", "frequency_penalty"),
    ("logit_bias", '{"50256": 1e400}', "logit_bias.50256"),
])
def test_non_finite_numbers_are_400_naming_the_field(secure: str, stub: StubUpstream,
                                                     field: str, value: str, param: str) -> None:
    body = f'{{"model": "stub", "messages": [{{"role": "user", "content": "hi"}}], ' \
           f'"{field}": {value}}}'
    error = error_of(post(secure, content=body.encode()), 400)
    assert error["param"] == param
    assert stub.received == []


def test_huge_integers_are_400(secure: str, stub: StubUpstream) -> None:
    body = '{"model": "stub", "messages": [{"role": "user", "content": "hi"}], "seed": ' \
           + "9" * 5000 + "}"
    error_of(post(secure, content=body.encode()), 400, "invalid_json")
    assert stub.received == []


def test_unexpected_errors_are_one_log_line_and_an_envelope(
        caplog: pytest.LogCaptureFixture) -> None:
    from proxy.middleware import UnexpectedErrors

    async def boom(request: Request) -> Response:
        raise RuntimeError("something nobody mapped")

    app = Starlette(routes=[Route("/x", boom)], middleware=[Middleware(UnexpectedErrors)])
    with caplog.at_level(logging.INFO), TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/x")
    error_of(response, 500, "internal_error")  # type: ignore[arg-type]
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and lines[0].exc_info is None
    assert "RuntimeError: something nobody mapped" in lines[0].getMessage()


# --- 9. model labels come from the config ---------------------------------------------------

def test_metric_labels_are_config_names_or_other(secure: str) -> None:
    for i in range(5):
        post(secure, {"model": f"client-chosen-{i}", "messages": MESSAGES})
    post(secure, {"model": "stub-anything", "messages": MESSAGES})
    metrics = httpx.get(secure.removesuffix("/v1") + "/metrics", headers=METRICS).text
    assert "client-chosen" not in metrics and "stub-anything" not in metrics
    assert 'model="other"' in metrics and 'model="stub-*"' in metrics


# --- 10. the smaller holes ------------------------------------------------------------------

def test_upstream_retry_after_is_passed_on(secure: str) -> None:
    response = post(secure, {"model": "stub-status-429", "messages": MESSAGES})
    error_of(response, 429)
    assert response.headers["retry-after"] == "7"


def test_refused_requests_are_audited(secure: str, secure_root: Path) -> None:
    post(secure, {"model": "stub", "messages": MESSAGES}, headers={"Authorization": "Bearer x"})
    post(secure, {"model": "stub", "messages": [{"role": "wizard", "content": "x"}]})
    post(secure, content=b"{" * 10 + b"x" * 250_000)  # over max_body_bytes by Content-Length
    audit = secure_root / "audit.jsonl"
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    seen = {(r["status"], r["caller"]) for r in records}
    assert ("401", "unauthenticated") in seen
    assert ("400", "team-a") in seen
    assert ("413", "team-a") in seen


def test_metrics_and_openapi_need_a_key_unless_public(secure: str, strict: str) -> None:
    root = secure.removesuffix("/v1")
    for path in ("/metrics", "/openapi.json"):
        error_of(httpx.get(root + path), 401, "invalid_api_key")
    assert httpx.get(root + "/openapi.json", headers=AUTH).status_code == 200
    assert httpx.get(root + "/metrics", headers=METRICS).status_code == 200
    error_of(httpx.get(root + "/metrics", headers=AUTH), 403, "metrics_key_required")
    assert httpx.get(root + "/healthz").status_code == 200
    strict_root = strict.removesuffix("/v1")  # auth.public_paths: [/healthz, /metrics]
    assert httpx.get(strict_root + "/metrics").status_code == 200
    error_of(httpx.get(strict_root + "/openapi.json"), 401)


def test_errors_list_models_and_policies_only_to_who_may_see_them(secure: str) -> None:
    unknown = {"model": "gpt-nope", "messages": MESSAGES}
    assert "stub" not in error_of(post(secure, unknown), 404, "model_not_found")["message"]
    assert "available: stub" in error_of(post(secure, unknown, headers=ADMIN), 404)["message"]
    lost = error_of(post(secure, {"model": "stub", "messages": MESSAGES},
                         headers={"Authorization": f"Bearer {LOST_KEY}"}), 503,
                    "policy_unavailable")  # its binding is the gateway's fault, not the call's
    assert "default" not in lost["message"]
    chosen = error_of(post(secure, {"model": "stub", "messages": MESSAGES},
                           headers={**ADMIN, "X-Vilmo-Policy": "nope"}), 400)
    assert "known: default" in chosen["message"]
    health = secure.removesuffix("/v1") + "/healthz"  # public, so names only with a key
    assert httpx.get(health).json() == {"status": "ok"}
    assert httpx.get(health, headers=AUTH).json() == {"status": "ok"}
    assert httpx.get(health, headers=ADMIN).json()["policies"] == ["default"]


@pytest.mark.parametrize("field, value", [("n", 3), ("max_tokens", 101),
                                          ("max_completion_tokens", 101)])
def test_n_and_max_tokens_limits_are_configurable(strict: str, stub: StubUpstream, field: str,
                                                  value: int) -> None:
    error = error_of(post(strict, {"model": "stub", "messages": MESSAGES, field: value}), 400)
    assert error["param"] == field
    assert stub.received == []
    ok = post(strict, {"model": "stub", "messages": MESSAGES, field: value - 1})
    assert ok.status_code == 200


def test_default_limits(secure: str) -> None:
    error_of(post(secure, {"model": "stub", "messages": MESSAGES, "n": 9}), 400)
    error_of(post(secure, {"model": "stub", "messages": MESSAGES, "max_tokens": 40_000}), 400)
    error_of(post(secure, {"model": "stub", "messages": MESSAGES, "max_tokens": 0}), 400)
