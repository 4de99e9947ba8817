"""The audit trail on both backends: written once per id, filtered, paged newest first,
exported, and pruned by the retention setting."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest
import redis
from store_fixtures import (
    SHARED_REDIS,
    MakeStore,
    backend_fixture,  # noqa: F401 - a fixture
    make_store_fixture,  # noqa: F401 - a fixture
    store_fixture,  # noqa: F401 - a fixture
)

from proxy.store import AuditQuery, AuditRecord, InvalidCursor, Store, StoreSettings
from proxy.store.sqlite_store import SQLiteBackend

T0 = float(int(time.time()) - 86400)  # within the retention, before now


def record(i: int, **fields: object) -> AuditRecord:
    base: dict[str, object] = {"id": f"req-{i:05d}", "ts": T0 + i, "key": "team-a",
                               "policy": "default", "model": "stub", "action": "allow",
                               "values": [], "data": {"n": i}}
    return AuditRecord.from_json(base | fields)


def test_a_record_written_twice_is_stored_once(make_store: MakeStore) -> None:
    one, two = make_store(), make_store()
    assert one.backend.append_audit([record(1), record(2)]) == 2
    assert two.backend.append_audit([record(2), record(1), record(3)]) == 1
    page = one.query_audit(AuditQuery())
    assert [r.id for r in page.data] == ["req-00003", "req-00002", "req-00001"]
    assert page.data[1] == record(2) and page.next is None


def test_the_background_writer_reaches_every_replica(make_store: MakeStore) -> None:
    one, two = make_store(), make_store()
    for i in range(300):
        (one if i % 2 else two).audit.write(record(i))
    assert one.audit.flush(10) and two.audit.flush(10)
    ids = [r.id for r in one.export_audit(AuditQuery())]
    assert sorted(ids) == [f"req-{i:05d}" for i in range(300)]


def test_a_record_with_a_lone_surrogate_is_stored_and_the_trail_goes_on(
        make_store: MakeStore) -> None:
    """A lone surrogate (valid JSON, no character) made the backend's write and the spool's
    raise ``UnicodeEncodeError`` before the fix: the writer's thread died, every later record
    stayed queued, and the batch was lost at the next start. Now it is stored (escaped) as it
    was, and the records after it are written too."""
    store = make_store()
    odd = record(1, data={"reply": {"text": "Bread \ud800 is nice. Brot \u00e9"}})
    store.audit.write(odd)
    assert store.audit.flush(5)
    for i in range(2, 5):
        store.audit.write(record(i))
    assert store.audit.flush(5) and store.audit.set_aside == 0
    assert store.audit.spool.depth == 0 and store.audit.spool.path.read_bytes() == b""
    page = store.query_audit(AuditQuery())
    assert [r.id for r in page.data] == [f"req-0000{i}" for i in (4, 3, 2, 1)]
    assert page.data[-1] == odd


def test_filters_select_by_every_field(store: Store) -> None:
    store.backend.append_audit([
        record(1, key="team-b"), record(2, policy="strict"), record(3, action="block"),
        record(4, model="gpt"), record(5, values=["mft.care", "safety.privacy"]),
        record(6, values=["mft.fairness"])])
    def ids(**filters: object) -> list[str]:
        return [r.id[-1] for r in store.query_audit(AuditQuery(**filters)).data]  # type: ignore[arg-type]
    assert ids(key="team-b") == ["1"]
    assert ids(policy="strict") == ["2"]
    assert ids(action="block") == ["3"]
    assert ids(model="gpt") == ["4"]
    assert ids(value="mft.care") == ["5"]
    assert ids(value="safety.privacy") == ["5"]
    assert ids(since=T0 + 3, until=T0 + 5) == ["4", "3"]
    assert ids(key="team-a", since=T0 + 5) == ["6", "5"]
    assert ids(key="nobody") == []


def test_the_key_id_filter_tells_keys_of_one_name_apart(store: Store) -> None:
    store.backend.append_audit([record(1, key_id="k1"), record(2, key_id="k2"), record(3),
                                record(4, key_id="k1")])
    assert [r.id for r in store.query_audit(AuditQuery(key_id="k1")).data] == [
        "req-00004", "req-00001"]
    assert [r.key_id for r in store.query_audit(AuditQuery(key="team-a")).data] == [
        "k1", None, "k2", "k1"]
    assert store.query_audit(AuditQuery(key_id="k3")).data == ()


def test_cursor_paging_walks_the_trail_newest_first(store: Store) -> None:
    store.backend.append_audit([record(i, action="block" if i % 3 else "allow")
                                for i in range(25)])
    seen: list[str] = []
    query = AuditQuery(limit=4, action="block")
    pages = 0
    while True:
        page = store.query_audit(query)
        pages += 1
        seen += [r.id for r in page.data]
        if page.next is None:
            break
        query = AuditQuery(limit=4, action="block", after=page.next)
    expected = [f"req-{i:05d}" for i in reversed(range(25)) if i % 3]
    assert seen == expected and pages == 4
    body = store.query_audit(AuditQuery(limit=2)).to_json()
    assert list(body) == ["data", "next"] and isinstance(body["next"], str)
    assert json.loads(json.dumps(body))["data"][0]["id"] == "req-00024"


@pytest.mark.parametrize("cursor", ["x", "1-", "-1", "9" * 40, "1; DROP TABLE audit",
                                    "9" * 19, "9" * 20 + "-0", "0-" + "9" * 20, "\u0663",
                                    "\u0663-\u0663"])
def test_a_forged_cursor_is_a_value_error(store: Store, cursor: str) -> None:
    """Past the largest id (SQLite's 2**63 - 1, a stream id part's 2**64 - 1) and in other
    scripts' digits too: before the fix SQLite raised OverflowError and Redis an ``ERR``
    reply, each a 500 on ``GET /admin/audit?after=...``."""
    with pytest.raises(InvalidCursor):
        store.query_audit(AuditQuery(after=cursor))


@pytest.mark.parametrize("since", [1e17, 1e300])
def test_a_since_past_every_id_finds_nothing(store: Store, since: float) -> None:
    """Before the fix Redis was asked for a stream id past 2**64 - 1 ms, refused it with an
    ``ERR`` reply, and ``GET /admin/audit?since=1e17`` was a 500."""
    store.backend.append_audit([record(1)])
    assert store.query_audit(AuditQuery(since=since)).data == ()
    assert list(store.export_audit(AuditQuery(since=since))) == []


@pytest.mark.parametrize("limit", [0, -5])
def test_a_limit_below_one_is_refused(store: Store, limit: int) -> None:
    with pytest.raises(ValueError):
        store.query_audit(AuditQuery(limit=limit))


def test_export_yields_every_matching_record_beyond_one_page(store: Store) -> None:
    store.backend.append_audit([record(i) for i in range(1200)])
    exported = list(store.export_audit(AuditQuery(since=T0 + 100)))
    assert len(exported) == 1100 and exported[0].id == "req-01199"
    assert len(store.query_audit(AuditQuery(limit=5000)).data) == 1000


def test_the_trail_survives_a_restart(make_store: MakeStore) -> None:
    first = make_store()
    first.audit.write(record(1))
    first.close()
    assert [r.id for r in make_store().query_audit(AuditQuery()).data] == ["req-00001"]


def test_sqlite_retention_deletes_old_records_and_caps_the_count(tmp_path: Path) -> None:
    now = [T0 + 10 * 86400]
    settings = StoreSettings(path=tmp_path / "s.db", spool_dir=tmp_path / "sp",
                             audit_retention_days=5, audit_max_records=3)
    backend = SQLiteBackend(settings, clock=lambda: now[0])
    backend.append_audit([record(0, ts=T0), *[record(i, ts=T0 + 9 * 86400 + i)
                                               for i in range(1, 6)]])
    assert backend.prune() == 3
    page = backend.query_audit(AuditQuery())
    assert [r.id for r in page.data] == ["req-00005", "req-00004", "req-00003"]
    backend.close()


@pytest.mark.parametrize("backend", ["redis"])
def test_redis_trims_the_stream_by_age_and_length(make_store: MakeStore, backend: str) -> None:
    store = make_store(audit_max_records=50)
    now = time.time()
    store.backend.append_audit([record(i, ts=now) for i in range(1000)])
    client = redis.Redis.from_url(SHARED_REDIS)
    stream = f"{store.settings.prefix}:audit"
    assert 50 <= client.xlen(stream) < 1000
    aged = make_store(audit_retention_days=0.3 / 86400)
    time.sleep(0.4)
    aged.backend.append_audit([record(5000, ts=now)])
    assert client.xlen(stream) < 150
    client.close()


@pytest.mark.parametrize("cursor", ["0", "0-0", "00-000"])
def test_a_cursor_before_the_first_record_is_an_empty_last_page(
        store: Store, backend: str, cursor: str) -> None:
    """Redis refused the exclusive end ``(0-0`` with an ``ERR`` reply: ``GET
    /admin/audit?after=0-0`` (and the export) was a 500. Now it is what SQLite answers for its
    own first cursor, ``0``: nothing is before it."""
    if ("-" in cursor) != (backend == "redis"):
        pytest.skip("each backend's own cursor format")
    store.backend.append_audit([record(1)])
    page = store.query_audit(AuditQuery(after=cursor))
    assert page.data == () and page.next is None
    assert list(store.export_audit(AuditQuery(after=cursor))) == []


@pytest.mark.parametrize("backend", ["redis"])
@pytest.mark.parametrize(("retention_days", "least_s", "most_s"), [
    (None, 6 * 86400, 7 * 86400), (1, 6 * 86400, 7 * 86400), (30, 31 * 86400, 32 * 86400)])
def test_redis_audit_id_sets_always_expire(make_store: MakeStore, backend: str,
                                           retention_days: float | None, least_s: int,
                                           most_s: int) -> None:
    """With ``audit_retention_days: null`` the per-day id sets had no TTL: the stream was
    trimmed (``audit_max_records``), but every id ever written stayed in Redis. Now a set
    lives at least ``ID_SET_TTL_S`` (the replays it guards against come sooner), or as long as
    the records when retention is longer."""
    store = make_store(audit_retention_days=retention_days, audit_max_records=5)
    store.backend.append_audit([record(i, ts=time.time()) for i in range(50)])
    client = redis.Redis.from_url(SHARED_REDIS)
    try:
        sets = list(client.scan_iter(match=f"{store.settings.prefix}:audit:ids:*"))
        assert sets
        for name in sets:
            assert least_s < client.ttl(name) <= most_s, name
        assert client.xlen(f"{store.settings.prefix}:audit") < 50
    finally:
        client.close()


def test_a_trail_file_from_before_key_ids_opens_and_filters(tmp_path: Path) -> None:
    """An embedded store made before ``audit.key_id`` existed gains the column on open; its
    old rows have no key id and new ones are filtered by theirs."""
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE audit (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, ts REAL NOT NULL,
            key TEXT NOT NULL, policy TEXT NOT NULL, model TEXT NOT NULL, action TEXT NOT NULL,
            vals TEXT NOT NULL, record TEXT NOT NULL);
        INSERT INTO audit(id, ts, key, policy, model, action, vals, record) VALUES
            ('req-old', 1.0, 'team-b', 'default', 'stub', 'allow', '[]',
             '{"id":"req-old","ts":1.0,"key":"team-b","policy":"default","model":"stub",
               "action":"allow","values":[],"data":{}}');""")
    old.close()
    for _ in range(2):  # opening it again finds the column there
        backend = SQLiteBackend(StoreSettings(path=path, spool_dir=tmp_path / "spool"))
        backend.append_audit([AuditRecord(id="req-new", ts=2.0, key="team-b", key_id="k1")])
        assert [(r.id, r.key_id) for r in backend.query_audit(AuditQuery()).data] == [
            ("req-new", "k1"), ("req-old", None)]
        assert [r.id for r in backend.query_audit(AuditQuery(key_id="k1")).data] == ["req-new"]
        backend.close()
