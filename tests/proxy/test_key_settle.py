"""A request is settled with its key's ``tpm`` window before its client has the whole reply, so
the client's next request is checked against what the last one used, not against what it held:
the settle ran only after the reply was out, so a client that sent its next request at once
(an SDK, sequentially) was refused when the settle came later (a busy worker, a slow store)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_gateway import serve_fake_gateway
from store_gateway import admin

from proxy.services import Services
from vilmo.policy_store import SHIPPED_POLICY_DIR

pytestmark = pytest.mark.slow  # a served gateway (fakes behind it: no model is loaded)
SETTLE_DELAY_S = 0.3


@pytest.fixture(name="served")
def served_fixture(tmp_path: Path) -> Iterator[tuple[str, Services]]:
    shutil.copytree(SHIPPED_POLICY_DIR, tmp_path / "policies")
    store = {"path": str(tmp_path / "state.db"), "spool_dir": str(tmp_path / "spool")}
    with serve_fake_gateway(tmp_path / "policies", store) as served:
        yield served


@pytest.mark.parametrize("stream", [False, True])
def test_the_next_request_sees_the_last_one_settled(served: tuple[str, Services],
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    stream: bool) -> None:
    """``max_tokens: 100`` holds 103 of the key's 160; the fake's reply uses 8 (27 streamed:
    estimated, the fake sends no usage). Settled, the same request fits twice more (27 + 27 +
    103); held, not once (103 + 103). The store settles ``SETTLE_DELAY_S`` late, as a busy or
    slow one does."""
    base, services = served
    store = services.store
    assert store is not None
    settle = store.charge_tokens

    def slow_settle(*args: Any) -> None:
        time.sleep(SETTLE_DELAY_S)
        settle(*args)

    monkeypatch.setattr(store, "charge_tokens", slow_settle)
    key = admin("POST", f"{base}/admin/keys", json={"name": "serial", "tpm": 160}).json()["key"]
    body = {"model": "stub", "max_tokens": 100, "stream": stream,
            "messages": [{"role": "user", "content": "Hello there"}]}
    for _ in range(3):
        reply = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=10,
                           headers={"authorization": f"Bearer {key}"})
        assert reply.status_code == 200, reply.text
