"""Policy reloads while the gateway serves: a reload pass (reading changed files, loading
generator weights) runs off the event loop, so a slow one holds no request; a policy added
since start-up is served to the request naming it; ``/admin/summary`` tolerates a policy
removed while it reads them. A real server (uvicorn in a thread) with fakes behind it."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from conftest import TEAM_KEY
from fake_gateway import serve_fake_gateway
from store_gateway import admin

from vilmo.policy_store import SHIPPED_POLICY_DIR

pytestmark = pytest.mark.slow  # a served gateway (fakes behind it: no model is loaded)

KEYS = {"keys": [{"key": TEAM_KEY, "name": "team", "allow_policy_header": True,
                     "policies": ["*"]}]}
HELD_S = 30.0
"""How long the held reload waits to be let go: past every client timeout below, so a reload
that holds the loop shows as a timed-out request, not a hung test."""


def chat(base: str, policy: str | None = None, timeout: float = 5.0) -> httpx.Response:
    chosen = {"X-Vilmo-Policy": policy} if policy else {}
    return httpx.post(f"{base}/v1/chat/completions", timeout=timeout,
                      headers={"authorization": f"Bearer {TEAM_KEY}", **chosen},
                      json={"model": "stub", "messages": [{"role": "user", "content": "Hi"}]})


@pytest.fixture(name="policies")
def policies_fixture(tmp_path: Path) -> Path:
    folder = tmp_path / "policies"
    shutil.copytree(SHIPPED_POLICY_DIR, folder)
    return folder


def test_a_slow_reload_holds_no_request(policies: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    store = {"path": str(tmp_path / "state.db"), "spool_dir": str(tmp_path / "spool")}
    with serve_fake_gateway(policies, store, auth=KEYS) as (base, services):
        entered, release = threading.Event(), threading.Event()
        passes: list[threading.Thread] = []
        refresh: Callable[..., None] = services.policies.refresh

        def held_refresh(force: bool = False) -> None:
            passes.append(threading.current_thread())
            entered.set()
            release.wait(HELD_S)
            refresh(force)

        monkeypatch.setattr(services.policies, "refresh", held_refresh)
        try:
            first = chat(base)  # finds a pass due (interval 0): starts it, is not held by it
            assert entered.is_set() and not release.is_set()
            assert first.status_code == 200, first.text
            assert first.headers["x-vilmo-policy"] == "default"  # the last good policies
            second = chat(base, "strict-care-fairness")
            assert second.status_code == 200, second.text
            assert not release.is_set()  # both answered while the pass was still held
            assert len(passes) == 1  # one pass at a time: the second did not start another
            assert passes[0] is not threading.main_thread()
        finally:
            release.set()


def test_a_policy_added_while_serving_is_served_to_the_request_naming_it(
        policies: Path, tmp_path: Path) -> None:
    store = {"path": str(tmp_path / "state.db"), "spool_dir": str(tmp_path / "spool")}
    with serve_fake_gateway(policies, store, auth=KEYS) as (base, _):
        (policies / "hot.yaml").write_text("name: hot\nvalues:\n  mft.loyalty: {weight: 1.0}\n")
        assert chat(base).status_code == 200  # a first pass only notes a new file
        reply = chat(base, "hot")  # waits for the pass that loads it
        assert reply.status_code == 200, reply.text
        assert reply.headers["x-vilmo-policy"] == "hot"
        unknown = chat(base, "nowhere")
        assert unknown.status_code == 400
        assert unknown.json()["error"]["code"] == "policy_not_found"


def test_summary_tolerates_a_policy_removed_while_it_reads_them(
        policies: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reload pass that drops a policy between listing the names and reading each one."""
    store = {"path": str(tmp_path / "state.db"), "spool_dir": str(tmp_path / "spool")}
    with serve_fake_gateway(policies, store, auth=KEYS) as (base, services):
        assert chat(base).status_code == 200
        listed = services.policies.loaded_names()

        def names_then_removed() -> list[str]:
            del services.policies._by_name["strict-care-fairness"]  # the pass just after
            return listed

        for listing in ("names", "loaded_names"):  # any list-then-get reading meets it
            monkeypatch.setattr(services.policies, listing, names_then_removed)
        reply = admin("GET", f"{base}/admin/summary")
        assert reply.status_code == 200, reply.text
        assert reply.json()["requests"] == 1
