"""The local spool and the background writer: records wait on disk while the store is down,
are written once it is back, and survive the gateway's own crash."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from proxy.store import AuditRecord, StoreUnavailable
from proxy.store.spool import Spool
from proxy.store.writer import AuditWriter


def record(i: int) -> AuditRecord:
    return AuditRecord(id=f"req-{i}", ts=1_700_000_000.0 + i, data={"n": i})


class FlakyTrail:
    """A store that is down while ``down`` is set, and remembers what reached it by id."""

    def __init__(self) -> None:
        self.down = threading.Event()
        self.ids: list[str] = []

    def append(self, records: Sequence[AuditRecord]) -> int:
        if self.down.is_set():
            raise StoreUnavailable("down")
        new = [r.id for r in records if r.id not in self.ids]
        self.ids += new
        return len(new)


def test_append_is_durable_and_drain_empties_the_file(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([record(1), record(2)])
    assert spool.depth == 2 and spool.path.read_bytes().count(b"\n") == 2
    trail = FlakyTrail()
    trail.down.set()
    try:
        spool.drain(trail.append)
    except StoreUnavailable:
        pass
    assert spool.depth == 2
    trail.down.clear()
    assert spool.drain(trail.append) == 2
    assert trail.ids == ["req-1", "req-2"] and spool.depth == 0
    assert spool.path.read_bytes() == b""
    spool.close()
    assert not spool.path.exists()


def test_a_dead_processs_spool_is_adopted_and_a_torn_line_skipped(tmp_path: Path) -> None:
    dead = Spool(tmp_path)
    dead.append([record(1), record(2)])
    with dead.path.open("ab") as out:
        out.write(b'{"id": "req-3", "ts": 1')  # a write the crash cut short
    dead._file.close()  # the process died: its lock is gone, the file stays
    alive = Spool(tmp_path)
    assert alive.depth == 2
    trail = FlakyTrail()
    assert alive.drain(trail.append) == 2
    assert trail.ids == ["req-1", "req-2"] and alive.corrupt == 1
    assert not dead.path.exists() and alive.depth == 0
    alive.close()


def test_a_live_processs_spool_is_left_to_it(tmp_path: Path) -> None:
    one, two = Spool(tmp_path), Spool(tmp_path)
    one.append([record(1)])
    assert two.rescan() == 0 and two.depth == 0
    assert two.drain(FlakyTrail().append) == 0
    assert one.path.exists() and one.depth == 1
    one.close()
    two.close()


def test_the_writer_spools_while_down_and_writes_each_record_once_after(
        tmp_path: Path) -> None:
    trail = FlakyTrail()
    writer = AuditWriter(trail.append, Spool(tmp_path), retry_s=0.05)
    for i in range(50):
        writer.write(record(i))
    assert writer.flush(5)
    trail.down.set()
    for i in range(50, 150):
        writer.write(record(i))
    assert not writer.flush(0.3)
    assert writer.spool.depth > 0
    trail.down.clear()
    assert writer.flush(5)
    assert sorted(trail.ids) == sorted(f"req-{i}" for i in range(150))
    assert len(trail.ids) == 150
    writer.close()


def test_a_full_queue_spills_to_the_spool_not_to_nowhere(tmp_path: Path) -> None:
    trail = FlakyTrail()
    trail.down.set()
    writer = AuditWriter(trail.append, Spool(tmp_path), queue_size=2, retry_s=0.05)
    for i in range(40):
        writer.write(record(i))
    trail.down.clear()
    assert writer.flush(5)
    assert sorted(trail.ids) == sorted(f"req-{i}" for i in range(40))
    writer.close()


def test_records_left_at_close_wait_in_the_spool_for_the_next_start(tmp_path: Path) -> None:
    trail = FlakyTrail()
    trail.down.set()
    writer = AuditWriter(trail.append, Spool(tmp_path), retry_s=10)
    for i in range(5):
        writer.write(record(i))
    writer.close(timeout_s=1)
    trail.down.clear()
    restarted = AuditWriter(trail.append, Spool(tmp_path), retry_s=0.05)
    assert restarted.flush(5)
    assert sorted(trail.ids) == [f"req-{i}" for i in range(5)]
    restarted.close()


def test_a_record_written_after_close_is_kept_for_the_next_start(tmp_path: Path) -> None:
    trail = FlakyTrail()
    writer = AuditWriter(trail.append, Spool(tmp_path), retry_s=0.05)
    writer.close()
    writer.write(record(1))  # a late request finishing during shutdown
    writer.spool._file.close()  # the process exits
    restarted = AuditWriter(trail.append, Spool(tmp_path), retry_s=0.05)
    assert restarted.flush(5)
    assert trail.ids == ["req-1"]
    restarted.close()


class FailingSpool(Spool):
    """A spool whose disk fails the first ``failures`` appends (full, or gone read-only)."""

    failures = 2

    def append(self, records: Sequence[AuditRecord]) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError(28, "No space left on device")
        super().append(records)


def test_records_are_held_when_the_spool_fails_too(tmp_path: Path) -> None:
    trail = FlakyTrail()
    trail.down.set()
    writer = AuditWriter(trail.append, FailingSpool(tmp_path), retry_s=0.05)
    for i in range(10):
        writer.write(record(i))
    assert not writer.flush(0.3)
    trail.down.clear()
    assert writer.flush(5)
    assert sorted(trail.ids) == sorted(f"req-{i}" for i in range(10))
    writer.close()


class PoisonedTrail(FlakyTrail):
    """A store that refuses one record for a reason of its own, whenever it comes."""

    def append(self, records: Sequence[AuditRecord]) -> int:
        if any(r.id == "req-bad" for r in records):
            raise ValueError("this store cannot take req-bad")
        return super().append(records)


def test_a_record_the_store_refuses_is_set_aside_and_the_others_written(
        tmp_path: Path) -> None:
    """Before the fix the refused batch went to the spool, whose drain failed on it for ever:
    the trail stopped (or, for an error the spool shared, the writer's thread died)."""
    trail = PoisonedTrail()
    errors: list[str] = []
    writer = AuditWriter(trail.append, Spool(tmp_path), retry_s=0.05,
                         on_error=lambda op, error: errors.append(op))
    writer.write(record(1))
    writer.write(AuditRecord(id="req-bad", ts=1_700_000_000.0))
    writer.write(record(2))
    assert writer.flush(5)
    for i in range(3, 6):
        writer.write(record(i))
    assert writer.flush(5)
    assert trail.ids == [f"req-{i}" for i in range(1, 6)]
    assert writer.set_aside == 1 and errors == ["audit_dropped"]
    assert writer.spool.depth == 0
    writer.close()


def test_a_spooled_record_the_store_refuses_does_not_block_the_spool(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([record(1), AuditRecord(id="req-bad", ts=1_700_000_000.0), record(2)])
    trail = PoisonedTrail()
    writer = AuditWriter(trail.append, spool, retry_s=0.05)
    writer.write(record(3))
    assert writer.flush(5)
    assert trail.ids == ["req-1", "req-2", "req-3"] and writer.set_aside == 1
    writer.close()


def test_a_record_with_a_lone_surrogate_is_spooled_and_read_back_as_it_was(
        tmp_path: Path) -> None:
    odd = AuditRecord(id="req-odd", ts=1.0, data={"text": "a \udfff b \u00e9"})
    spool = Spool(tmp_path)
    spool.append([odd])
    seen: list[AuditRecord] = []
    assert spool.drain(seen.extend) == 1
    assert seen == [odd]
