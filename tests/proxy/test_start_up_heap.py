"""A serving worker puts what its start-up built out of the garbage collector's reach (issue 16):
a full collection then walks only what requests made since, not the models and modules (one
such collection took about 60 ms of a request at c=1). Apps built elsewhere (the tests build
many in one process) do not freeze: what is frozen is never collected."""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import fake_services
from starlette.testclient import TestClient

import proxy.app
from proxy.app import create_app
from vilmo.instruct.principles import PrincipleBank


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    try:
        yield
    finally:
        gc.unfreeze()  # the rest of the suite's objects stay collectable


def started(tmp_path: Path, policy_dir: Path, bank: PrincipleBank, freeze_heap: bool) -> int:
    """The frozen object count once an app's lifespan has started."""
    services = fake_services(policy_dir, bank)
    services.config.store.path = tmp_path / "state.db"
    app = create_app(services.config, lambda config: services, freeze_heap=freeze_heap)
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        return gc.get_freeze_count()


def test_a_worker_freezes_what_its_start_up_built(unfrozen: None, tmp_path: Path,
                                                  policy_dir: Path, bank: PrincipleBank) -> None:
    assert started(tmp_path, policy_dir, bank, freeze_heap=True) > 0


def test_other_apps_leave_the_heap_collectable(unfrozen: None, tmp_path: Path,
                                               policy_dir: Path, bank: PrincipleBank) -> None:
    assert started(tmp_path, policy_dir, bank, freeze_heap=False) == 0


def test_the_workers_factory_builds_a_freezing_app(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[bool] = []

    def recording(config: object, freeze_heap: bool = False) -> str:
        asked.append(freeze_heap)
        return "app"

    monkeypatch.delenv("VILMO_CONFIG", raising=False)  # the embedded defaults, to a local base
    monkeypatch.setenv("VILMO_UPSTREAM_BASE", "http://127.0.0.1:9/v1")
    monkeypatch.setattr(proxy.app, "create_app", recording)
    factory = logging.getLogRecordFactory()  # the worker's log redaction, undone after
    try:
        assert proxy.app.app_from_environment() == "app"  # type: ignore[comparison-overlap]
    finally:
        logging.setLogRecordFactory(factory)
    assert asked == [True]
