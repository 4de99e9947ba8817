"""A reload pass that hangs (weights on a hung mount) must not hold a request naming an
unknown policy without end: it waits a bounded time, then gets its usual error."""

from __future__ import annotations

import asyncio
import shutil
import threading
from pathlib import Path

import pytest

from proxy import policy_reload
from vilmo.policy_store import SHIPPED_POLICY_DIR, PolicyStore, UnknownPolicy


def test_a_hung_pass_does_not_hold_a_request_naming_an_unknown_policy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(SHIPPED_POLICY_DIR / "default.yaml", tmp_path / "default.yaml")
    store = PolicyStore(tmp_path, "default", reload_interval=0)
    entered, release = threading.Event(), threading.Event()

    def hung_refresh(force: bool = False) -> None:
        entered.set()
        release.wait(60)

    monkeypatch.setattr(store, "refresh", hung_refresh)
    monkeypatch.setattr(policy_reload, "UNKNOWN_WAIT_S", 0.2, raising=False)

    async def request() -> str:
        try:
            await policy_reload.policy_named(store, "nowhere")
        except UnknownPolicy:
            return "unknown"
        return "served"

    loop = asyncio.new_event_loop()
    try:
        answer = loop.run_until_complete(asyncio.wait_for(request(), 10))
        assert entered.is_set()
        assert not release.is_set()  # answered while the pass still hangs
        assert answer == "unknown"
    finally:
        release.set()
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


def test_a_pass_in_flight_too_long_is_logged_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    shutil.copy(SHIPPED_POLICY_DIR / "default.yaml", tmp_path / "default.yaml")
    store = PolicyStore(tmp_path, "default", reload_interval=0)
    release = threading.Event()
    monkeypatch.setattr(store, "refresh", lambda force=False: release.wait(60))
    monkeypatch.setattr(policy_reload, "HUNG_PASS_S", 0.0)

    async def requests() -> None:
        for _ in range(3):
            policy_reload.start_reload(store)
            await asyncio.sleep(0)

    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level("ERROR", logger=policy_reload.log.name):
            loop.run_until_complete(requests())
        hung = [r for r in caplog.records if "has run for" in r.getMessage()]
        assert len(hung) == 1
    finally:
        release.set()
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
