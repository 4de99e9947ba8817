"""A reload pass that hangs (weights on a hung mount) must not hold a request naming an
unknown policy without end: it waits a bounded time, then gets its usual error."""

from __future__ import annotations

import asyncio
import shutil
import threading
from pathlib import Path

import pytest

from proxy import policy_reload
from vilmo.policy import Policy
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


def named(path: Path, name: str) -> None:
    path.write_text(f"name: {name}\nvalues:\n  mft.care: {{weight: 1.0}}\n")


def test_a_hung_pass_does_not_stop_later_reloads_and_commits_when_it_ends(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pass hung on one file (its generator weights on a hung mount) held the store's pass
    lock, so no later change was loaded until it ended. Past ``HUNG_PASS_S`` it is abandoned:
    a new pass loads the other files and skips the stuck one; the abandoned pass, when it
    ends, commits what it read of files no later pass read meanwhile (its slow file); at most
    one abandoned pass is in flight."""
    shutil.copy(SHIPPED_POLICY_DIR / "default.yaml", tmp_path / "default.yaml")
    release = {"slow": threading.Event(), "slower": threading.Event()}
    entered = {name: threading.Event() for name in release}

    def check(policy: Policy) -> None:
        if policy.name in release:
            entered[policy.name].set()
            release[policy.name].wait(60)

    store = PolicyStore(tmp_path, "default", reload_interval=0, check=check)
    monkeypatch.setattr(policy_reload, "HUNG_PASS_S", 0.0)

    async def passes(count: int) -> None:
        """``count`` passes, each awaited (a new file is loaded on its second)."""
        for _ in range(count):
            running = policy_reload.start_reload(store)
            assert running is not None
            await asyncio.wait([running], timeout=5)

    async def scenario() -> None:
        named(tmp_path / "slow.yaml", "slow")
        await passes(1)  # seen
        hung = policy_reload.start_reload(store)  # loads slow.yaml: hangs in its check
        assert hung is not None
        await asyncio.to_thread(entered["slow"].wait, 5)
        named(tmp_path / "other.yaml", "other")
        await passes(2)  # the hung pass is abandoned; the next ones load other.yaml
        assert not hung.done()  # still stuck
        assert store.loaded_names() == ["default", "other"]
        named(tmp_path / "slower.yaml", "slower")
        await passes(1)
        second = policy_reload.start_reload(store)  # loads slower.yaml: hangs too
        assert second is not None
        await asyncio.to_thread(entered["slower"].wait, 5)
        assert policy_reload.start_reload(store) is second  # not abandoned: one at a time
        named(tmp_path / "other.yaml", "renamed")
        release["slow"].set()  # the abandoned pass ends: its slow.yaml is kept
        await asyncio.wait([hung], timeout=5)
        assert store.loaded_names() == ["default", "other", "slow"]
        release["slower"].set()
        await asyncio.wait([second], timeout=5)
        await passes(3)  # the renamed file
        assert store.loaded_names() == ["default", "renamed", "slow", "slower"]

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(asyncio.wait_for(scenario(), 30))
    finally:
        for event in release.values():
            event.set()
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


def test_a_slow_pass_that_finishes_loads_its_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pass slow on one file (a large model's weights), past ``HUNG_PASS_S`` but finishing,
    was abandoned and everything it read dropped; the next pass read the file again, was
    abandoned again, and so on: the policy never loaded. Now the abandoned pass commits the
    file no later pass read, once, and later passes meanwhile skip it."""
    shutil.copy(SHIPPED_POLICY_DIR / "default.yaml", tmp_path / "default.yaml")
    loads: list[str] = []
    entered, release = threading.Event(), threading.Event()

    def check(policy: Policy) -> None:
        if policy.name == "big":
            loads.append(policy.name)
            entered.set()
            release.wait(60)

    store = PolicyStore(tmp_path, "default", reload_interval=0, check=check)
    monkeypatch.setattr(policy_reload, "HUNG_PASS_S", 0.0)

    async def scenario() -> None:
        named(tmp_path / "big.yaml", "big")
        first = policy_reload.start_reload(store)  # notes big.yaml
        assert first is not None
        await asyncio.wait([first], timeout=5)
        slow = policy_reload.start_reload(store)  # loads big.yaml, slowly
        assert slow is not None
        assert await asyncio.to_thread(entered.wait, 10)
        for _ in range(3):  # each finds the pass in flight too long: abandoned, then skipped
            running = policy_reload.start_reload(store)
            assert running is not None and running is not slow
            await asyncio.wait([running], timeout=5)
        assert store.loaded_names() == ["default"]
        release.set()  # the slow load finishes
        await asyncio.wait([slow], timeout=5)
        assert store.loaded_names() == ["big", "default"]
        for _ in range(2):
            running = policy_reload.start_reload(store)
            assert running is not None
            await asyncio.wait([running], timeout=5)
        assert loads == ["big"]  # loaded once, not again

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(asyncio.wait_for(scenario(), 30))
    finally:
        release.set()
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
