"""The request record's sinks fail alone: a JSON Lines audit file that cannot be written (a full
disk) changes no client's answer and costs the store's trail no record; its failures are logged
(rate-limited) and counted, and every audit loss is in the metrics' exposition."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import httpx
import pytest
from conftest import TEAM_KEY
from fake_gateway import serve_fake_gateway
from fakes import MemoryAudit, fake_services
from store_gateway import admin, chat, wait_for

from proxy.audit import EmbeddedAuditSink
from proxy.metrics import Metrics
from proxy.record import Ledger
from proxy.store import AuditRecord, Store, StoreSettings
from proxy.store.sqlite_store import SQLiteBackend
from vilmo.instruct.principles import PrincipleBank
from vilmo.policy_store import SHIPPED_POLICY_DIR

FULL_DISK = Path("/dev/full")
"""Opens for appending; every write to it fails with ENOSPC."""


def store_errors(exposition: str) -> dict[str, float]:
    """``vilmo_store_errors_total`` by operation."""
    prefix = 'vilmo_store_errors_total{operation="'
    return {line[len(prefix):].split('"', 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in exposition.splitlines() if line.startswith(prefix)}


@pytest.mark.slow  # a served gateway (fakes behind it: no model is loaded)
@pytest.mark.skipif(not FULL_DISK.exists(), reason="needs /dev/full")
def test_a_full_disk_under_the_audit_file_changes_no_answer_and_loses_no_trail_record(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = {"path": str(tmp_path / "state.db"), "spool_dir": str(tmp_path / "spool")}
    auth = {"keys": [{"key": TEAM_KEY, "name": "team-a"}]}
    with serve_fake_gateway(SHIPPED_POLICY_DIR, store, auth=auth) as (base, services):
        services.audit = EmbeddedAuditSink(FULL_DISK)
        with caplog.at_level(logging.ERROR, logger="vilmo.audit"):
            plain = chat(base, TEAM_KEY)
            assert plain.status_code == 200, plain.text
            streamed = httpx.post(f"{base}/v1/chat/completions", timeout=10,
                                  headers={"authorization": f"Bearer {TEAM_KEY}"},
                                  json={"model": "stub", "stream": True,
                                        "messages": [{"role": "user", "content": "hi"}]})
            assert streamed.status_code == 200
            assert streamed.text.rstrip().endswith("data: [DONE]")
            refused = chat(base, "sk-not-a-key-0123456789")
            assert refused.status_code == 401
            assert refused.json()["error"]["code"] == "invalid_api_key"

        def trail() -> list[dict[str, object]]:
            page: list[dict[str, object]] = admin("GET", f"{base}/admin/audit").json()["data"]
            return page

        wait_for(lambda: len(trail()) == 3)
        assert sorted(str(r["data"]["status"]) for r in trail()) == ["200", "200", "401"]  # type: ignore[index]
        metrics = admin("GET", f"{base}/metrics").text
        assert store_errors(metrics)["audit_file"] == 3.0
        assert store_errors(metrics)["audit_dropped"] == 0.0
        lines = [r for r in caplog.records if "audit_file" in r.getMessage()]
        assert len(lines) == 1, [r.getMessage() for r in lines]  # one line a minute, not three


def test_records_set_aside_and_audit_file_failures_are_in_the_exposition(
        tmp_path: Path) -> None:
    """A record the store refuses on its own is set aside (``proxy.store.writer``): lost, so
    it must show in ``/metrics`` like every other store error."""
    settings = StoreSettings(path=tmp_path / "state.db", spool_dir=tmp_path / "spool")
    backend = SQLiteBackend(settings)
    append = backend.append_audit

    def refuse_one(records: list[AuditRecord]) -> int:
        if any(r.id == "unwritable" for r in records):
            raise TypeError("a record this backend cannot take")
        return append(records)

    backend.append_audit = refuse_one  # type: ignore[method-assign,assignment]
    store = Store(backend, settings)
    metrics = Metrics(["stub"])
    metrics.store_health = store.health
    try:
        before = store_errors(metrics.exposition().decode())
        assert before["audit_dropped"] == 0.0 and before["audit_file"] == 0.0
        store.audit.write(AuditRecord(id="unwritable", ts=time.time()))
        store.audit.write(AuditRecord(id="fine", ts=time.time()))
        assert store.audit.flush()
        store.count_local_error("audit_file")
        after = store_errors(metrics.exposition().decode())
        assert after["audit_dropped"] == 1.0 and after["audit_file"] == 1.0
        assert store.health().reachable
    finally:
        store.close()


def test_a_record_the_trail_cannot_take_is_counted_and_the_other_sinks_still_get_it(
        tmp_path: Path) -> None:
    """Every sink of ``Services.finish`` fails alone, the store's trail too (a spool that
    cannot be written when the writer's queue is full): the loss is counted as
    ``audit_dropped`` and nothing is raised into the request."""
    services = fake_services(SHIPPED_POLICY_DIR, PrincipleBank.load())
    settings = StoreSettings(path=tmp_path / "state.db", spool_dir=tmp_path / "spool")
    store = services.store = Store(SQLiteBackend(settings), settings)
    services.metrics.store_health = store.health

    def unwritable(record: AuditRecord) -> None:
        raise OSError(28, "No space left on device")

    store.audit.write = unwritable  # type: ignore[method-assign]
    try:
        services.finish(Ledger("team-a"), "200")
        assert isinstance(services.audit, MemoryAudit) and len(services.audit.records) == 1
        exposition = services.metrics.exposition().decode()
        assert 'vilmo_requests_total{model="other",policy="",status="200",stream="false"} 1.0' \
            in exposition
        assert store_errors(exposition)["audit_dropped"] == 1.0
    finally:
        store.close()
