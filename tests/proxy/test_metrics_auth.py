"""Who may read ``/metrics``, which names every tenant's key and its usage: the metrics key
(``auth.metrics_key``) and the admin key; a client key (config or virtual) is a 403, no key or a
wrong one a 401, unless ``auth.public_paths`` lists it. The metrics key opens nothing else. With
no key configured at all (the embedded defaults) it is open."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import METRICS_KEY, TEAM_KEY
from fake_gateway import ADMIN, serve_fake_gateway
from fakes import fake_services
from store_gateway import admin
from stub_upstream import ServerThread

from proxy.app import create_app
from proxy.services import Services
from proxy.settings import GatewayConfig
from vilmo.instruct.principles import PrincipleBank
from vilmo.policy_store import SHIPPED_POLICY_DIR

pytestmark = pytest.mark.slow  # a served gateway (fakes behind it: no model is loaded)

CLIENT_KEYS = {"keys": [{"key": TEAM_KEY, "name": "team-a"}], "metrics_key": METRICS_KEY}


def get(url: str, key: str | None = None) -> httpx.Response:
    return httpx.get(url, headers={"authorization": f"Bearer {key}"} if key else {}, timeout=10)


def error_code(reply: httpx.Response) -> tuple[int, str, str]:
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return reply.status_code, error["type"], error["code"]


def test_the_metrics_key_and_the_admin_key_open_metrics_and_client_keys_do_not(
        tmp_path: Path) -> None:
    store = {"path": str(tmp_path / "state.db"), "spool_dir": str(tmp_path / "spool")}
    with serve_fake_gateway(SHIPPED_POLICY_DIR, store, auth=CLIENT_KEYS) as (base, _):
        other = admin("POST", f"{base}/admin/keys", json={"name": "acme-secret", "rpm": 1})
        virtual = admin("POST", f"{base}/admin/keys", json={"name": "tenant-b"}).json()["key"]
        for _ in range(2):  # acme-secret's usage and its 429, now in /metrics
            httpx.post(f"{base}/v1/chat/completions", timeout=10,
                       headers={"authorization": f"Bearer {other.json()['key']}"},
                       json={"model": "stub", "messages": [{"role": "user", "content": "hi"}]})
        for key in (METRICS_KEY, ADMIN):
            reply = get(f"{base}/metrics", key)
            assert reply.status_code == 200 and "vilmo_requests_total" in reply.text
            assert 'key="acme-secret"' in reply.text
        for key in (TEAM_KEY, virtual):  # a tenant reads no other tenant's names and usage
            refused = get(f"{base}/metrics", key)
            assert error_code(refused) == (403, "permission_error", "metrics_key_required")
            assert "acme-secret" not in refused.text
        for wrong in (None, "sk-wrong-0123456789", ADMIN[:-1], METRICS_KEY[:-1]):
            refused = get(f"{base}/metrics", wrong)
            assert error_code(refused) == (401, "authentication_error", "invalid_api_key")
        for path in ("/openapi.json", "/v1/models"):  # the admin and metrics keys are no
            for key in (ADMIN, METRICS_KEY):          # client keys
                assert get(f"{base}{path}", key).status_code == 401
            assert get(f"{base}{path}", TEAM_KEY).status_code == 200
        assert get(f"{base}/admin/keys", METRICS_KEY).status_code == 401
        chat = httpx.post(f"{base}/v1/chat/completions", timeout=10,
                          headers={"authorization": f"Bearer {METRICS_KEY}"},
                          json={"model": "stub", "messages": [{"role": "user", "content": "x"}]})
        assert error_code(chat) == (401, "authentication_error", "invalid_api_key")


def test_without_a_metrics_key_only_the_admin_key_opens_metrics(tmp_path: Path) -> None:
    """Refused by default: client keys do not open it just because no metrics key is set."""
    store = {"path": str(tmp_path / "state.db"), "spool_dir": str(tmp_path / "spool")}
    auth = {"keys": CLIENT_KEYS["keys"]}
    with serve_fake_gateway(SHIPPED_POLICY_DIR, store, auth=auth) as (base, _):
        assert get(f"{base}/metrics", ADMIN).status_code == 200
        assert get(f"{base}/metrics", TEAM_KEY).status_code == 403
        assert get(f"{base}/metrics", METRICS_KEY).status_code == 401


def test_public_metrics_need_no_key(tmp_path: Path) -> None:
    store = {"path": str(tmp_path / "state.db"), "spool_dir": str(tmp_path / "spool")}
    auth = CLIENT_KEYS | {"public_paths": ["/healthz", "/metrics"]}
    with serve_fake_gateway(SHIPPED_POLICY_DIR, store, auth=auth) as (base, _):
        assert get(f"{base}/metrics").status_code == 200
        assert get(f"{base}/metrics", ADMIN).status_code == 200
        assert get(f"{base}/metrics", TEAM_KEY).status_code == 200


def serve_keyless(tmp_path: Path, auth: dict[str, Any]) -> ServerThread:
    """A gateway without client or admin keys (the embedded defaults' auth)."""
    config = GatewayConfig.model_validate({
        "model_list": [{"model_name": "stub", "litellm_params": {"model": "openai/stub"}}],
        "policy_dir": str(SHIPPED_POLICY_DIR), "auth": auth,
        "store": {"path": str(tmp_path / "state.db"), "spool_dir": str(tmp_path / "spool")}})
    def build(_: GatewayConfig) -> Services:
        services = fake_services(SHIPPED_POLICY_DIR, PrincipleBank.load())
        services.config = config
        return services

    return ServerThread(create_app(config, build))


def test_with_no_key_configured_metrics_stay_open_and_a_metrics_key_alone_guards_them(
        tmp_path: Path) -> None:
    with serve_keyless(tmp_path / "open", {}) as server:
        assert get(f"{server.url}/metrics").status_code == 200
    with serve_keyless(tmp_path / "guarded", {"metrics_key": METRICS_KEY}) as server:
        assert get(f"{server.url}/metrics", METRICS_KEY).status_code == 200
        assert get(f"{server.url}/metrics").status_code == 401
        assert get(f"{server.url}/v1/models").status_code == 200  # the rest stays keyless
        paths = get(f"{server.url}/openapi.json").json()["paths"]
        assert "security" not in paths["/metrics"]["get"]  # the document's: a key is needed
        assert paths["/v1/models"]["get"]["security"] == [{}, {"bearer": []}]  # optional
