"""Policy files removed while the gateway serves: the default policy's file gone keeps its last
good version serving; a key's bound policy gone is the gateway's 503, never a 400 that blames
the client for a header it did not send."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fake_gateway import serve_fake_gateway
from fakes import MemoryAudit
from store_gateway import admin, chat, wait_for

from vilmo.policy_store import SHIPPED_POLICY_DIR

pytestmark = pytest.mark.slow  # a served gateway (fakes behind it: no model is loaded)


def test_removed_policy_files(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(SHIPPED_POLICY_DIR, policies)
    (policies / "live.yaml").write_text("name: live\nvalues:\n  mft.care: {weight: 1.0}\n")
    store = {"path": str(tmp_path / "state.db"), "spool_dir": str(tmp_path / "spool")}
    with serve_fake_gateway(policies, store) as (base, services):
        bound = admin("POST", f"{base}/admin/keys", json={"name": "bound", "policy": "live"})
        plain = admin("POST", f"{base}/admin/keys", json={"name": "plain"})
        assert chat(base, bound.json()["key"]).status_code == 200

        (policies / "live.yaml").unlink()
        # A request that finds a reload due is served the policies last loaded while the pass
        # runs off the event loop (proxy.policy_reload); one after it finds the policy gone.
        wait_for(lambda: chat(base, bound.json()["key"]).status_code != 200)
        reply = chat(base, bound.json()["key"])
        assert reply.status_code == 503, reply.text
        error = reply.json()["error"]
        assert error["code"] == "policy_unavailable" and error["param"] is None
        assert "'live'" in error["message"] and "not loaded on the gateway" in error["message"]
        assert isinstance(services.audit, MemoryAudit)
        assert ("503", "policy_unavailable") in [(r.status, r.error_code)
                                                 for r in services.audit.records]

        (policies / "default.yaml").rename(policies / "default.yaml.bak")
        reply = chat(base, plain.json()["key"])
        assert reply.status_code == 200, reply.text
        assert reply.headers["x-vilmo-policy"] == "default"
