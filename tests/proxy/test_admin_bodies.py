"""The admin API's request bodies are read as the chat route reads its own, and only once the
admin key is checked (in process, on the embedded store). Before the fix FastAPI read and parsed
them before ``require_admin`` ran: invalid JSON without a key was a 400 that described it, not a
401; a client that left mid-body, or a streamed body past ``server.max_body_bytes``, was a 400
"There was an error parsing the body" (not 499, not 413); ``"rpm": true`` was an rpm of 1."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes import app_with, fake_services
from fastapi import FastAPI

from proxy.app import attach_store
from proxy.settings import AuthSettings
from proxy.store import StoreSettings, open_store
from vilmo.instruct.principles import PrincipleBank

ADMIN_KEY = "sk-admin-bodies-0123456789"


@pytest.fixture(name="app")
def app_fixture(policy_dir: Path, bank: PrincipleBank, tmp_path: Path) -> FastAPI:
    services = fake_services(policy_dir, bank)
    services.config.auth = AuthSettings(admin_key=ADMIN_KEY)
    app: FastAPI = app_with(services)
    app.state.store = open_store(StoreSettings(path=tmp_path / "state.db"))
    attach_store(services, app.state.store)
    return app


def send(app: FastAPI, method: str, path: str, content: bytes, key: str | None = ADMIN_KEY,
         ) -> httpx.Response:
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            return await client.request(method, path, content=content, headers=headers)

    return asyncio.run(call())


def send_parts(app: FastAPI, parts: list[bytes], leave: bool) -> tuple[int, dict[str, Any]]:
    """POST /admin/keys in ``parts`` with no Content-Length; ``leave``: then hang up."""
    import json

    messages: list[dict[str, Any]] = [{"type": "http.request", "body": part, "more_body": True}
                                      for part in parts]
    if leave:
        messages.append({"type": "http.disconnect"})
    else:
        messages[-1]["more_body"] = False
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await asyncio.sleep(3600)
        raise AssertionError("read past the end")

    async def record(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/admin/keys", "raw_path": b"/admin/keys",
             "query_string": b"", "http_version": "1.1", "scheme": "http", "root_path": "",
             "server": ("gateway", 80), "client": ("client", 1), "app": app,
             "headers": [(b"authorization", f"Bearer {ADMIN_KEY}".encode()),
                         (b"content-type", b"application/json")]}
    asyncio.run(app(scope, receive, record))  # type: ignore[arg-type]
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(body)


@pytest.mark.parametrize("body", [b"{", b"[" * 10_000, b'{"name": 5}'])
def test_a_body_without_the_admin_key_is_a_401_whatever_it_holds(app: FastAPI,
                                                                 body: bytes) -> None:
    for method, path in (("POST", "/admin/keys"), ("PATCH", "/admin/keys/x")):
        reply = send(app, method, path, body, key=None)
        assert reply.status_code == 401, reply.text
        assert reply.json()["error"]["code"] == "invalid_admin_key"


def test_a_client_that_leaves_mid_body_is_a_499(app: FastAPI) -> None:
    status, reply = send_parts(app, [b'{"name": "te'], leave=True)
    assert (status, reply["error"]["code"]) == (499, "client_closed")


def test_a_streamed_body_past_the_limit_is_a_413(app: FastAPI) -> None:
    limit = app.state.services.config.server.max_body_bytes
    part = b'{"name": "' + b"a" * (1 << 20)
    status, reply = send_parts(app, [part] * (limit // len(part) + 2), leave=False)
    assert (status, reply["error"]["code"]) == (413, "payload_too_large")


@pytest.mark.parametrize("field, value", [("rpm", True), ("tpm", "7"), ("name", 5),
                                          ("rpm", 0), ("name", "x" * 129),
                                          # a key's name is a metric label and a record field
                                          ("name", "team\nkey"), ("name", "team\u0000"),
                                          ("name", "team\u007f")])
def test_a_field_of_the_wrong_type_or_size_is_a_400_naming_it(app: FastAPI, field: str,
                                                              value: object) -> None:
    import json

    reply = send(app, "POST", "/admin/keys", json.dumps({"name": "team", field: value}).encode())
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"] == field
    assert "input" not in reply.json()["error"]["message"]  # no echo of what was sent


def test_invalid_json_from_the_admin_is_the_chat_routes_400(app: FastAPI) -> None:
    reply = send(app, "POST", "/admin/keys", b'{"name": "a", "rpm": NaN}')
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "rpm"
    created = send(app, "POST", "/admin/keys", b'{"name": "a", "rpm": 5}')
    assert created.status_code == 201 and created.json()["rpm"] == 5
    changed = send(app, "PATCH", f"/admin/keys/{created.json()['id']}", b'{"rpm": null}')
    assert changed.status_code == 200 and changed.json()["rpm"] is None


def get(app: FastAPI, path: str, **params: str) -> httpx.Response:
    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            return await client.get(path, params=params,
                                    headers={"authorization": f"Bearer {ADMIN_KEY}"})

    return asyncio.run(call())


@pytest.mark.parametrize("path, param, value", [("/admin/audit", "limit", "10000000"),
                                                ("/admin/audit/export", "limit", "-1"),
                                                ("/admin/summary", "bucket", "-7"),
                                                ("/admin/audit", "key", "k" * 300)])
def test_a_query_parameter_out_of_bounds_is_a_400_naming_it(app: FastAPI, path: str, param: str,
                                                           value: str) -> None:
    """Before the fix the message was pydantic's error list as Python text, the value sent
    echoed in it, and ``param`` null."""
    reply = get(app, path, **{param: value})
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["param"] == param and error["message"].startswith(f"{param}: ")
    assert value not in error["message"]


def test_the_summary_takes_time_zero_as_a_time(app: FastAPI) -> None:
    """Before the fix ``since=0`` counted as absent: the last 24 hours before ``until``."""
    reply = get(app, "/admin/summary", since="0", until="1e6")
    assert reply.status_code == 200, reply.text
    assert (reply.json()["since"], reply.json()["until"]) == (0, 1e6)
