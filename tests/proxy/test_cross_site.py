"""A page in the operator's browser cannot spend the gateway's upstream key. A gateway without
client keys (the quick start) read any POST body as JSON whatever its Content-Type, and nothing
looked at where the request came from: a web page could POST a form or ``text/plain`` (a CORS
"simple" request: no preflight) to ``http://127.0.0.1:4000/v1/chat/completions`` and the upstream
was called. Now the JSON routes answer 415 for any other type and 403 for ``Sec-Fetch-Site:
cross-site``, in the OpenAI envelope; real clients (the official openai client, LiteLLM as a
client, curl with the JSON type) are served as before."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from fake_gateway import ADMIN, serve_fake_gateway
from fakes import FakeUpstream, fake_services
from stub_upstream import ServerThread

from proxy.app import create_app
from proxy.settings import GatewayConfig
from vilmo.instruct.principles import PrincipleBank

CHAT = json.dumps({"model": "stub", "messages": [{"role": "user", "content": "hi"}]})
CHECK = json.dumps({"text": "Talk to him calmly."})
BROWSER = {"origin": "https://evil.example", "sec-fetch-mode": "no-cors"}
"""What a browser adds to a page's cross-origin POST."""


@pytest.fixture(name="open_gateway", scope="module")
def open_gateway_fixture(policy_dir: Path, bank: PrincipleBank,
                         ) -> Iterator[tuple[str, FakeUpstream]]:
    """A gateway with no key configured: every caller is anonymous."""
    config = GatewayConfig.model_validate({
        "model_list": [{"model_name": "stub", "litellm_params": {"model": "openai/stub-model"}}],
        "policy_dir": str(policy_dir), "default_policy": "default",
        "server": {"policy_reload_interval_s": 0}})
    upstream = FakeUpstream()
    services = fake_services(policy_dir, bank, upstream)
    services.config = config
    with ServerThread(create_app(config, lambda _: services)) as served:
        yield served.url, upstream


def error_of(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["type"] in ("invalid_request_error",
                                                       "permission_error"), error


@pytest.mark.parametrize("path, body", [("/v1/chat/completions", CHAT),
                                        ("/v1/values/check", CHECK)])
@pytest.mark.parametrize("content_type", [
    "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x", None, "application/jsonp", "text/json"])
def test_a_body_not_typed_json_is_a_415(open_gateway: tuple[str, FakeUpstream], path: str,
                                        body: str, content_type: str | None) -> None:
    url, upstream = open_gateway
    before = len(upstream.calls)
    headers = {"content-type": content_type} if content_type else {}
    response = httpx.post(f"{url}{path}", content=body, headers={**BROWSER, **headers})
    error_of(response, 415, "unsupported_media_type")
    assert len(upstream.calls) == before


def test_a_cross_site_request_is_a_403_whatever_its_type(
        open_gateway: tuple[str, FakeUpstream]) -> None:
    url, upstream = open_gateway
    before = len(upstream.calls)
    for content_type in ("text/plain", "application/json"):
        response = httpx.post(f"{url}/v1/chat/completions", content=CHAT, headers={
            **BROWSER, "sec-fetch-site": "cross-site", "content-type": content_type})
        error_of(response, 403, "cross_site_request")
    assert len(upstream.calls) == before


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "Application/JSON;charset=UTF-8"])
def test_json_is_served(open_gateway: tuple[str, FakeUpstream], content_type: str) -> None:
    url, _ = open_gateway
    for fetch_site in ({}, {"sec-fetch-site": "same-origin"}, {"sec-fetch-site": "none"}):
        response = httpx.post(f"{url}/v1/chat/completions", content=CHAT,
                              headers={"content-type": content_type, **fetch_site})
        assert response.status_code == 200, response.text


def test_the_official_client_is_served(open_gateway: tuple[str, FakeUpstream]) -> None:
    url, _ = open_gateway
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    reply = client.chat.completions.create(model="stub",
                                           messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content
    checked = client.post("/values/check", body={"text": "Talk to him calmly."},
                          cast_to=httpx.Response)
    assert checked.status_code == 200


def test_litellm_as_a_client_is_served(open_gateway: tuple[str, FakeUpstream]) -> None:
    """LiteLLM (and LangChain's ChatOpenAI) call an OpenAI-compatible server through the
    official openai client."""
    import litellm

    url, _ = open_gateway
    reply = litellm.completion(model="openai/stub", api_base=f"{url}/v1", api_key="unused",
                               messages=[{"role": "user", "content": "hi"}], num_retries=0)
    assert reply.choices[0].message.content


@pytest.mark.skipif(shutil.which("curl") is None, reason="no curl")
def test_curl_is_served_with_the_json_type(open_gateway: tuple[str, FakeUpstream]) -> None:
    url, _ = open_gateway

    def curl(*args: str) -> dict[str, object]:
        out = subprocess.run(["curl", "-sS", f"{url}/v1/chat/completions", *args, "-d", CHAT],
                             capture_output=True, text=True, timeout=30, check=True).stdout
        return dict(json.loads(out))

    assert "choices" in curl("-H", "Content-Type: application/json")
    assert curl()["error"] == {  # curl -d alone sends a form's type
        "message": "the request body must be JSON sent with 'Content-Type: application/json'",
        "type": "invalid_request_error", "param": "Content-Type",
        "code": "unsupported_media_type"}


def test_admin_posts_want_json_and_a_refused_chat_is_audited(policy_dir: Path,
                                                            tmp_path: Path) -> None:
    store = {"path": str(tmp_path / "state.db"), "spool_dir": str(tmp_path / "spool")}
    admin = {"authorization": f"Bearer {ADMIN}"}
    with serve_fake_gateway(policy_dir, store) as (url, _):
        refused = httpx.post(f"{url}/admin/keys", content=json.dumps({"name": "a"}),
                             headers={**admin, "content-type": "text/plain"})
        error_of(refused, 415, "unsupported_media_type")
        issued = httpx.post(f"{url}/admin/keys", json={"name": "a"}, headers=admin)
        assert issued.status_code == 201, issued.text
        key = issued.json()
        changed = httpx.patch(f"{url}/admin/keys/{key['id']}", content=json.dumps({"rpm": 5}),
                              headers={**admin, "content-type": "application/x-www-form-urlencoded"})
        error_of(changed, 415, "unsupported_media_type")
        chat = httpx.post(f"{url}/v1/chat/completions", content=CHAT,
                          headers={"authorization": f"Bearer {key['key']}",
                                   "content-type": "text/plain"})
        error_of(chat, 415, "unsupported_media_type")
        request_id = chat.headers["x-request-id"]
        for _ in range(50):
            records = httpx.get(f"{url}/admin/audit", headers=admin).json()["data"]
            if any(r["id"] == request_id for r in records):
                break
            time.sleep(0.1)
        [record] = [r for r in records if r["id"] == request_id]
        assert record["data"]["status"] == "415"
