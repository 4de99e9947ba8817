"""Every client-sized field of a chat request is bounded, and a client's names are echoed cut.

The reviewer's cases: one 4 MiB body of 120,000 tiny messages held a worker's event loop for
1.5 s (4 at once stalled ``/healthz`` 3.4 s); a seed of 4,001 digits, a ``top_logprobs`` of
1e30, a temperature of 1e308 and 5,000-character service tiers reached the upstream; and a
150,000-character field name came back whole in the error's message and param (the answer
twice the request).
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes import FakeUpstream, app_with, fake_services, post_chat

from proxy import routes
from proxy.protocol import MAX_NAME_CHARS
from proxy.request_bounds import MAX_LOGIT_BIAS, MAX_MESSAGES
from proxy.services import Services
from vilmo.instruct.principles import PrincipleBank

HI = [{"role": "user", "content": "Hi."}]
LONG = "k" * 150_000


def services_of(policy_dir: Path, bank: PrincipleBank, **config: Any,
                ) -> tuple[Services, FakeUpstream]:
    upstream = FakeUpstream()
    services = fake_services(policy_dir, bank, upstream)
    server = services.config.server.model_copy(update={"max_body_bytes": 4 * 1024 * 1024})
    services.config = services.config.model_copy(update={**config, "server": server})
    return services, upstream


def send(services: Services, content: bytes | dict[str, Any]) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app_with(services))
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            return await client.post("/v1/chat/completions", headers={
                "content-type": "application/json"}, content=content if isinstance(
                    content, bytes) else json.dumps(content).encode())
    return asyncio.run(go())


@pytest.mark.parametrize("field, value, param", [
    ("messages", HI * (MAX_MESSAGES + 1), "messages"),
    ("messages", [{"role": "user", "content": [{"type": "text", "text": ""}] * 70}] * 60,
     "messages"),  # 4,200 parts: counted before they are validated
    ("stop", ["a", "b", "c", "d", "e"], "stop"),
    ("logit_bias", {str(i): 1 for i in range(MAX_LOGIT_BIAS + 1)}, "logit_bias"),
    ("logit_bias", {"50256": -101}, "logit_bias.50256"),
    ("seed", -(10**4000) + 1, "seed"),
    ("seed", 2**63, "seed"),
    ("top_logprobs", 10**30, "top_logprobs"),
    ("top_logprobs", -1, "top_logprobs"),
    ("temperature", 1e308, "temperature"),
    ("top_p", -1e308, "top_p"),
    ("frequency_penalty", 1e308, "frequency_penalty"),
    ("presence_penalty", -3, "presence_penalty"),
    ("n", 10**6, "n"),
    ("service_tier", "x" * 5000, "service_tier"),
    ("reasoning_effort", "y" * 5000, "reasoning_effort"),
    ("user", "u" * 257, "user"),
    ("modalities", ["text", "video"], "modalities.1"),
    ("modalities", ["text"] * 3, "modalities"),
    ("metadata", {str(i): "v" for i in range(17)}, "metadata"),
])
def test_a_field_out_of_its_bounds_is_a_400_naming_it(
        policy_dir: Path, bank: PrincipleBank, field: str, value: Any, param: str) -> None:
    services, upstream = services_of(policy_dir, bank)
    body = {"model": "stub", "messages": HI, field: value}
    response = send(services, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert error["message"].startswith(f"{param}: ") and len(error["message"]) < 400
    assert upstream.calls == []


def test_what_openai_clients_send_is_forwarded(policy_dir: Path, bank: PrincipleBank) -> None:
    values = {"stop": ["\n", "END"], "logit_bias": {"50256": -100}, "seed": -(2**63),
              "top_logprobs": 20, "logprobs": True, "temperature": 2, "top_p": 0.9,
              "frequency_penalty": -2.0, "presence_penalty": 0.5, "n": 2,
              "service_tier": "priority", "reasoning_effort": "minimal", "user": "u" * 256,
              "modalities": ["text", "audio"], "metadata": {"k" * 64: "v" * 512}}
    services, upstream = services_of(policy_dir, bank)
    response = asyncio.run(post_chat(services, {"model": "stub", "messages": HI, **values}))
    assert response.status_code == 200, response.text
    sent = upstream.calls[-1]
    assert {k: sent.get(k) for k in values if k != "metadata"} == {
        k: v for k, v in values.items() if k != "metadata"}
    assert asyncio.run(post_chat(services, {"model": "stub", "messages": HI, "stop": "\n"},
                                 )).status_code == 200


def test_a_large_body_is_parsed_and_validated_off_the_event_loop(
        policy_dir: Path, bank: PrincipleBank, monkeypatch: pytest.MonkeyPatch) -> None:
    """Timing-free: parse_body runs in another thread than the event loop's for a body over
    ``OFF_LOOP_BYTES`` (every other request of the worker waits while the loop is busy), and
    on the loop for a small one (a thread hop costs more than parsing it)."""
    threads: list[int] = []
    parse = routes.parse_body  # type: ignore[attr-defined]

    def recorded(body: bytes) -> dict[str, Any]:
        threads.append(threading.get_ident())
        return parse(body)

    monkeypatch.setattr(routes, "parse_body", recorded)
    services, _ = services_of(policy_dir, bank)
    big = {"model": "stub", "messages": [{"role": "user", "content": "a" * 200}] * MAX_MESSAGES}
    assert len(json.dumps(big)) > routes.OFF_LOOP_BYTES
    loop_thread = threading.get_ident()  # asyncio.run runs its loop in this thread
    assert send(services, big).status_code == 200
    assert send(services, {"model": "stub", "messages": HI}).status_code == 200
    assert threads[0] != loop_thread and threads[1] == loop_thread


@pytest.mark.parametrize("body", [
    json.dumps({"model": "stub", "messages": HI, LONG: 1}),
    '{"model":"stub","messages":[{"role":"user","content":"hi"}],"metadata":{"' + LONG + '":NaN}}',
    json.dumps({"model": "stub", "messages": HI, "logit_bias": {LONG: "x"}}),
    json.dumps({"model": "stub", "messages": HI, "metadata": {LONG: 5}}),
])
def test_a_clients_long_name_is_echoed_cut(policy_dir: Path, bank: PrincipleBank,
                                           body: str) -> None:
    services, upstream = services_of(policy_dir, bank, strict_params=True)
    response = send(services, body.encode())
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert len(error["param"]) <= MAX_NAME_CHARS + 3 and len(error["message"]) < 600
    assert error["param"].endswith("...") and "kkkk" in error["param"]
    assert len(response.content) < 1500 and upstream.calls == []


@pytest.mark.parametrize("text, valid", [
    (b"\\ud800", False), (b"\\uDFFF", False), (b"\xed\xa0\x80", False), (b"\xed\xbf\xbf", False),
    (b"\\ud83d\\ude00", True), (b"\xf0\x9f\x98\x80", True), (b"\\ud7ff", True),
])
def test_a_lone_surrogate_is_found_however_it_is_written(
        policy_dir: Path, bank: PrincipleBank, text: bytes, valid: bool) -> None:
    """The surrogate check runs only on bodies whose bytes may hold one (``json.dumps`` of a
    4 MiB body held the GIL a fifth as long as parsing it): escapes in either case, and the
    bytes ``json.loads`` decodes to a surrogate."""
    services, upstream = services_of(policy_dir, bank)
    body = b'{"model":"stub","messages":[{"role":"user","content":"a' + text + b'"}]}'
    response = send(services, body)
    assert response.status_code == (200 if valid else 400), response.text
    assert len(upstream.calls) == valid
