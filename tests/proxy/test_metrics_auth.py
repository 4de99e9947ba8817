"""Who may read ``/metrics`` when keys are required: client keys (config or virtual) as
documented, and the admin key too; nobody without a key unless ``auth.public_paths`` lists it.
The admin key opens no other client path."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from conftest import TEAM_KEY
from fake_gateway import ADMIN, serve_fake_gateway
from store_gateway import admin

from vilmo.policy_store import SHIPPED_POLICY_DIR

pytestmark = pytest.mark.slow  # a served gateway (fakes behind it: no model is loaded)

CLIENT_KEYS = {"keys": [{"key": TEAM_KEY, "name": "team-a"}]}


def get(url: str, key: str | None = None) -> httpx.Response:
    return httpx.get(url, headers={"authorization": f"Bearer {key}"} if key else {}, timeout=10)


def test_the_admin_key_and_client_keys_open_metrics(tmp_path: Path) -> None:
    store = {"path": str(tmp_path / "state.db"), "spool_dir": str(tmp_path / "spool")}
    with serve_fake_gateway(SHIPPED_POLICY_DIR, store, auth=CLIENT_KEYS) as (base, _):
        virtual = admin("POST", f"{base}/admin/keys", json={"name": "scraper"}).json()["key"]
        for key in (ADMIN, TEAM_KEY, virtual):
            reply = get(f"{base}/metrics", key)
            assert reply.status_code == 200 and "vilmo_requests_total" in reply.text
        for key in (None, "sk-wrong-0123456789", ADMIN[:-1]):
            refused = get(f"{base}/metrics", key)
            assert refused.status_code == 401
            assert refused.json()["error"]["code"] == "invalid_api_key"
        for path in ("/openapi.json", "/v1/models"):  # the admin key is no client key
            assert get(f"{base}{path}", ADMIN).status_code == 401
            assert get(f"{base}{path}", TEAM_KEY).status_code == 200


def test_public_metrics_need_no_key(tmp_path: Path) -> None:
    store = {"path": str(tmp_path / "state.db"), "spool_dir": str(tmp_path / "spool")}
    auth = CLIENT_KEYS | {"public_paths": ["/healthz", "/metrics"]}
    with serve_fake_gateway(SHIPPED_POLICY_DIR, store, auth=auth) as (base, _):
        assert get(f"{base}/metrics").status_code == 200
        assert get(f"{base}/metrics", ADMIN).status_code == 200
