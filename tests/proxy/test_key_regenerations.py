"""A key's ``tpm`` is a ceiling across a request's regenerations: one reservation paid for up
to 1 + ``max_regenerations`` upstream calls, each sent with the same reply cap, so one request
on a ``tpm: 300`` key had its upstream generate 3 times the key's minute. Each regeneration now
fits in what the request holds, or holds the rest from the key's window; refused, the reply is
blocked (the policy's refusal) instead of regenerated."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from store_gateway import admin, serve_gateway, store_backend_fixture, store_config
from stub_upstream import ServerThread

__all__ = ["store_backend_fixture"]
pytestmark = pytest.mark.slow  # a served gateway
TPM = 300
POLICY = ("name: tpm-regen\nvalues:\n  mft.care: {action: regenerate}\n"
          "checks: {input: false}\nmax_regenerations: 5\nstreaming: {mode: buffer}\n"
          "refusal: REFUSED-BY-POLICY\n")


class BillingUpstream:
    """Answers every call with a reply the keyword judge flags (``punch``), and bills what a
    real upstream may: 10 prompt tokens and the whole reply cap it was sent."""

    def __init__(self) -> None:
        self.billed: list[int] = []

    async def chat(self, request: Request) -> Response:
        body = await request.json()
        cap = body.get("max_completion_tokens") or body.get("max_tokens") or 1000
        self.billed.append(10 + cap)
        usage = {"prompt_tokens": 10, "completion_tokens": cap, "total_tokens": 10 + cap}
        message = {"role": "assistant", "content": "Go and punch him."}
        if not body.get("stream"):
            return JSONResponse({"id": "c1", "object": "chat.completion", "created": 1,
                                 "model": "m", "usage": usage, "choices": [
                                     {"index": 0, "finish_reason": "length",
                                      "message": message}]})
        head = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
        events = [{**head, "choices": [{"index": 0, "delta": message, "finish_reason": None}]},
                  {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]},
                  {**head, "choices": [], "usage": usage}]
        lines = [f"data: {json.dumps(event)}\n\n" for event in events] + ["data: [DONE]\n\n"]
        return StreamingResponse(iter(lines), media_type="text/event-stream")


@pytest.fixture(name="served")
def served_fixture(policy_dir: Path, classifier: Any, tmp_path: Path,
                   store_backend: dict[str, Any]) -> Iterator[tuple[str, BillingUpstream]]:
    policies = tmp_path / "policies"
    shutil.copytree(policy_dir, policies)
    (policies / "tpm-regen.yaml").write_text(POLICY)
    upstream = BillingUpstream()
    app = Starlette(routes=[Route("/v1/chat/completions", upstream.chat, methods=["POST"])])
    with ServerThread(app) as stub, serve_gateway(
            store_config(stub.url, policies, store_backend), classifier) as url:
        yield url, upstream


@pytest.mark.parametrize("stream", [False, True])
def test_regenerations_never_spend_past_the_keys_tpm(
        served: tuple[str, BillingUpstream], stream: bool) -> None:
    """No ``max_tokens``: each call is capped at a quarter of the 300 (75) and billed 85. The
    first call and as many regenerations as the window has room for are made; then the reply
    is blocked. Before: all 6 calls, 510 tokens."""
    base, upstream = served
    reply = admin("POST", f"{base}/admin/keys",
                  json={"name": "tenant", "tpm": TPM, "policy": "tpm-regen"})
    key = reply.json()["key"]
    body = {"model": "stub", "stream": stream,
            "messages": [{"role": "user", "content": "Any tips for my exam?"}]}
    reply = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=30,
                       headers={"authorization": f"Bearer {key}"})
    assert reply.status_code == 200, reply.text
    assert sum(upstream.billed) <= TPM, upstream.billed
    assert 1 < len(upstream.billed) < 6  # some regenerations were made, not all five
    assert "REFUSED-BY-POLICY" in reply.text and "punch" not in reply.text
    assert reply.headers["x-vilmo-regenerations"] == str(len(upstream.billed) - 1)
