"""The JSON Lines audit file's lock is shared by every worker, and one that rotates holds it:
a worker's event loop must not wait for it. A record meeting a held lock joins a backlog that
the sink's thread writes once the lock is free, in order; the shutdown writes it out."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import threading
from pathlib import Path

from proxy.audit import EmbeddedAuditSink
from proxy.record import Ledger, RequestRecord


def record() -> RequestRecord:
    closed = Ledger("team-a").close("200")
    assert closed is not None
    return closed


def ids_in(path: Path) -> list[str]:
    return [json.loads(line)["request_id"] for line in path.read_text().splitlines()]


def test_a_held_lock_holds_no_event_loop_and_loses_no_record(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = EmbeddedAuditSink(path)
    records = [record() for _ in range(6)]
    sink.write(records[0])  # the lock free: written at once
    assert ids_in(path) == [records[0].request_id]
    holder = os.open(sink._file.lock_path, os.O_RDWR)  # type: ignore[union-attr]
    fcntl.flock(holder, fcntl.LOCK_EX)  # another worker, rotating
    served = threading.Event()

    async def worker() -> None:
        """A worker's loop: records finish while another request is served."""
        progressed = asyncio.Event()

        async def other_request() -> None:
            progressed.set()

        other = asyncio.create_task(other_request())
        for each in records[1:4]:
            sink.write(each)
            await asyncio.sleep(0)
        await other
        assert progressed.is_set()
        served.set()

    loop = threading.Thread(target=asyncio.run, args=(worker(),), daemon=True)
    try:
        loop.start()
        assert served.wait(10), "the event loop waited for another worker's lock"
        assert ids_in(path) == [records[0].request_id]  # the rest wait for the lock
    finally:
        os.close(holder)  # the other worker is done
    loop.join(10)
    for each in records[4:]:  # behind the backlog, or at once once it is written
        sink.write(each)
    assert sink.close() == 0
    assert ids_in(path) == [r.request_id for r in records]  # every one, in order


def test_records_after_close_are_still_written(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = EmbeddedAuditSink(path)
    first, late = record(), record()
    sink.write(first)
    assert sink.close() == 0
    sink.write(late)  # a request that ends during the shutdown
    assert ids_in(path) == [first.request_id, late.request_id]


def test_a_held_lock_bounds_the_backlog_and_counts_the_rest(tmp_path: Path) -> None:
    """Another process holding the lock for long: records past the bound are counted as
    failures (``on_failure``, ``audit_file``), not queued without end."""
    line_bytes = len(json.dumps(record().to_json(), separators=(",", ":"))) + 1
    bound = 10 * line_bytes
    sink = EmbeddedAuditSink(tmp_path / "audit.jsonl", max_backlog_bytes=bound)
    failures: list[BaseException] = []
    sink.on_failure = failures.append
    holder = os.open(sink._file.lock_path, os.O_RDWR | os.O_CREAT)  # type: ignore[union-attr]
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        for _ in range(50):
            sink.write(record())
        queued = list(sink._backlog)
        assert sum(map(len, queued)) <= bound
        assert len(queued) + len(failures) == 50  # every record queued or counted
        assert len(failures) >= 40
    finally:
        os.close(holder)
    assert sink.close() == 0


def test_a_write_after_close_does_not_wait_for_a_held_lock(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = EmbeddedAuditSink(path)
    first, late = record(), record()
    sink.write(first)
    assert sink.close() == 0
    holder = os.open(sink._file.lock_path, os.O_RDWR)  # type: ignore[union-attr]
    fcntl.flock(holder, fcntl.LOCK_EX)  # another worker holds it
    returned = threading.Event()

    def shutdown_loop() -> None:  # a request that ends during the shutdown
        sink.write(late)
        returned.set()

    threading.Thread(target=shutdown_loop, daemon=True).start()
    try:
        assert returned.wait(10), "a write after close waited for another worker's lock"
        assert ids_in(path) == [first.request_id]  # still held: not yet written
    finally:
        os.close(holder)
    assert returned.wait(10)
    assert sink.close() == 0
    assert ids_in(path) == [first.request_id, late.request_id]
