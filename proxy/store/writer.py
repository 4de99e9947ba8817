"""The audit trail's background writer: the request path hands a record over and moves on.

``write`` puts the record on a bounded queue and returns at once; one thread writes batches to
the store. When the store fails, the batch goes to the spool and the thread retries the spool
every ``retry_s``; new records go to the spool behind the waiting ones until it drains, so the
trail keeps its order and a dead Redis costs one timeout per retry, not one per request. A full
queue (the writer far behind) spills to the spool from the caller: a disk write on the event loop
in overload, rather than a lost record. A batch the store refuses for a reason of its own (not
``StoreUnavailable``) is written one record at a time, and a record that still fails alone is
set aside (logged, counted as ``vilmo_store_errors_total{operation="audit_dropped"}``): one
unwritable record never stops the thread nor waits in the spool for ever.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence

from proxy.store.records import AuditRecord, StoreUnavailable
from proxy.store.spool import Spool

log = logging.getLogger("vilmo.store.audit")

Append = Callable[[Sequence[AuditRecord]], int]


class AuditWriter:
    """An ``AuditSink``: ``write(record)`` never blocks on the store and never drops."""

    def __init__(self, append: Append, spool: Spool, *, queue_size: int = 10_000,
                 batch: int = 256, retry_s: float = 1.0,
                 maintain: Callable[[], object] | None = None, maintain_every_s: float = 300.0,
                 on_error: Callable[[str, BaseException], None] | None = None,
                 on_ok: Callable[[], None] | None = None) -> None:
        self._append = append
        self.spool = spool
        self._queue: queue.Queue[AuditRecord | None] = queue.Queue(queue_size)
        """Records to write; None only wakes the thread to stop."""
        self._batch = batch
        self._retry_s = retry_s
        self._maintain = maintain
        self._maintain_every_s = maintain_every_s
        self._on_error = on_error or (lambda op, error: None)
        self._on_ok = on_ok or (lambda: None)
        self._retry_at = 0.0
        self.set_aside = 0
        """Records neither the store nor the spool could take on their own (logged, dropped)."""
        self._held: list[AuditRecord] = []
        """Records neither the store nor the spool took (both failing), retried first."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vilmo-audit-writer", daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def write(self, record: AuditRecord) -> None:
        if self._stop.is_set():
            self._spool([record])
            return
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self._spool([record])

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every record handed over is in the store (the queue and spool empty)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if (self._queue.unfinished_tasks == 0 and self.spool.depth == 0
                    and not self._held):
                return True
            time.sleep(0.01)
        return False

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the thread after it has written (or spooled) what it holds."""
        if self._stop.is_set():
            return
        self._stop.set()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        self._thread.join(timeout_s)
        rest = self._held + self._take_all()
        if rest:
            self._spool(rest)
        self.spool.close()

    def _run(self) -> None:
        next_maintenance = time.monotonic()
        while not (self._stop.is_set() and self._queue.empty() and not self._held):
            taken = self._take(timeout_s=0.2)
            batch = self._held + taken
            try:
                self._write(batch)
                self._held = []
            except Exception as error:  # the writer thread must not die: spool the batch
                log.exception("audit writer failed; spooling %d records", len(batch))
                self._on_error("audit", error)
                self._retry_at = time.monotonic() + self._retry_s
                try:
                    self._spool(batch)
                    self._held = []
                except OSError:  # the spool's disk fails too: hold them and try again
                    log.critical("audit spool unwritable; holding %d records", len(batch))
                    self._held = batch
            finally:
                for _ in taken:
                    self._queue.task_done()
            if self._maintain is not None and time.monotonic() >= next_maintenance:
                next_maintenance = time.monotonic() + self._maintain_every_s
                try:
                    self.spool.rescan()
                    self._maintain()
                except Exception as error:  # noqa: BLE001 - retried at the next interval
                    log.warning("audit retention failed: %s", error)
                    self._on_error("prune", error)
        if self.spool.depth:
            self._drain()

    def _write(self, batch: list[AuditRecord]) -> None:
        if self.spool.depth and not self._drain():
            self._spool(batch)
            return
        if not batch:
            return
        try:
            self._store(batch)
        except StoreUnavailable as error:
            self._spool(batch)
            self._failed(error)
            return
        self._on_ok()

    def _store(self, records: Sequence[AuditRecord]) -> int:
        """Append ``records`` to the store, one at a time when it refuses them for a reason
        other than being down (``_each_alone``). ``StoreUnavailable`` propagates (the store's
        writes are idempotent: a batch retried after some of it was written stores nothing
        twice)."""
        return self._each_alone(self._append, records, StoreUnavailable, "store")

    def _spool(self, records: Sequence[AuditRecord]) -> None:
        """``spool.append``, one at a time when it refuses them for a reason other than its
        disk (an ``OSError`` propagates)."""
        self._each_alone(self.spool.append, records, OSError, "spool")

    def _each_alone(self, write: Callable[[Sequence[AuditRecord]], int | None],
                    records: Sequence[AuditRecord], passes: type[Exception], where: str,
                    ) -> int:
        """``write(records)``; when it fails otherwise than with ``passes``, the records
        written one at a time, and a record that fails alone set aside: one unwritable record
        never holds up the others. Returns how many ``write`` said it wrote."""
        try:
            return write(records) or 0
        except passes:
            raise
        except Exception as error:  # noqa: BLE001 - whatever it is, one record is set aside
            if len(records) == 1:
                self._set_aside(records[0], error)
                return 0
            log.warning("the audit %s refused a batch of %d records (%s: %s); writing them "
                        "one at a time", where, len(records), type(error).__name__, error)
        return sum(self._each_alone(write, [record], passes, where) for record in records)

    def _set_aside(self, record: AuditRecord, error: BaseException) -> None:
        self.set_aside += 1
        log.error("audit record %s could not be written and was set aside: %s: %.200s",
                  record.id, type(error).__name__, error)
        self._on_error("audit_dropped", error)

    def _drain(self) -> bool:
        """Write the spool to the store if it is time to try; True when the spool is empty."""
        if time.monotonic() < self._retry_at:
            return False
        try:
            count = self.spool.drain(self._store)
        except StoreUnavailable as error:
            self._failed(error)
            return False
        if count:
            log.info("audit store reachable again: wrote %d spooled records", count)
            self._on_ok()
        return True

    def _failed(self, error: BaseException) -> None:
        if self._retry_at == 0.0 or time.monotonic() >= self._retry_at:
            log.warning("audit store unreachable (%s); spooling to %s", error, self.spool.path)
        self._retry_at = time.monotonic() + self._retry_s
        self._on_error("audit", error)

    def _take(self, timeout_s: float) -> list[AuditRecord]:
        try:
            first = self._queue.get(timeout=timeout_s)
        except queue.Empty:
            return []
        if first is None:
            self._queue.task_done()
            return []
        return [first, *self._take_all(self._batch - 1)]

    def _take_all(self, most: int | None = None) -> list[AuditRecord]:
        taken: list[AuditRecord] = []
        while most is None or len(taken) < most:
            try:
                record = self._queue.get_nowait()
            except queue.Empty:
                break
            if record is None:
                self._queue.task_done()
            else:
                taken.append(record)
        return taken
