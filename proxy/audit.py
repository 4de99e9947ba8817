"""The audit trail: one record per chat request, written to an ``AuditSink``.

The embedded sink keeps recent records in memory and, when configured, appends every record to
a JSON Lines file, rotated by size (``proxy.audit_file``: ``audit.max_file_bytes``,
``audit.rotated_files``). The store's audit trail (SQLite or a Redis Stream, queryable through
the admin API) is written before it by ``Services.finish`` (``proxy.trail`` makes its records).
A sink that fails (the file's disk full) fails alone: ``SinkFailures`` logs it, at most once a
minute per sink, and counts it (``vilmo_store_errors_total{operation="audit_file"}``); the
request's answer and the other sinks are untouched.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from proxy.audit_file import RotatingFile
from proxy.record import RequestRecord

log = logging.getLogger("vilmo.audit")

LOG_EVERY_S = 60.0
"""One log line per failing sink at most this often (the count of the others in it)."""
CLOSE_WAIT_S = 5.0
"""How long the shutdown waits for audit records still waiting for the file's lock."""
MAX_BACKLOG_BYTES = 32 * 1024 * 1024
"""The most the records waiting for the file's lock may hold: one held without end (another
process) must not grow the worker's memory without end. Past it a record is counted lost."""


class BacklogFull(OSError):
    """A record not queued: the backlog waiting for the file's lock is full."""


class AuditSink(Protocol):
    """Where audit records go (``proxy.record`` builds them)."""

    def write(self, record: RequestRecord) -> None: ...


class EmbeddedAuditSink:
    """Recent records in memory; every record appended to a JSON Lines file if a path is set
    (rotated past ``max_file_bytes``, ``rotated_files`` kept; None: never rotated).

    ``write`` runs on the event loop, and the file's lock is shared by every worker: one that
    is rotating holds it. So a record is written at once only when the lock is free; else it
    joins a backlog that a thread of the sink writes, waiting for the lock there, and so does
    every record after it until the backlog is empty (the file keeps their order). The backlog
    holds at most ``max_backlog_bytes``: a record past it is counted lost (``on_failure``).
    ``close`` (at shutdown) waits for the backlog, bounded; a record after it is queued alike
    (a thread of the sink waits for the lock, never the loop)."""

    def __init__(self, path: Path | None = None, keep: int = 1000,
                 max_file_bytes: int | None = None, rotated_files: int = 5,
                 max_backlog_bytes: int = MAX_BACKLOG_BYTES) -> None:
        self.recent: deque[RequestRecord] = deque(maxlen=keep)
        self.path = path
        self._file = None if path is None else RotatingFile(path, max_file_bytes, rotated_files)
        self._backlog: deque[bytes] = deque()  # its head is being written until popped
        self._backlog_bytes = 0
        self.max_backlog_bytes = max_backlog_bytes
        self._changed = threading.Condition()
        self._writer: threading.Thread | None = None
        self._closing = False
        self.on_failure: Callable[[BaseException], None] | None = None
        """Reports a backlog record's failure (``Services`` counts it as ``audit_file``);
        a record written at once raises its failure instead."""
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: RequestRecord) -> None:
        self.recent.append(record)
        if self._file is None:
            return
        line = (json.dumps(record.to_json(), separators=(",", ":")) + "\n").encode()
        with self._changed:
            if not self._backlog and self._file.append(line, wait=False):
                return
            waiting = self._backlog_bytes
            if waiting + len(line) <= self.max_backlog_bytes:
                self._backlog.append(line)
                self._backlog_bytes += len(line)
                self._changed.notify()
                if self._writer is None or not self._writer.is_alive():
                    self._writer = threading.Thread(target=self._write_backlog, daemon=True,
                                                    name="audit-file-writer")
                    self._writer.start()
                return
        # outside the condition: the failure's count may log
        (self.on_failure or _log_failure)(BacklogFull(
            f"audit record not written: {waiting} bytes already wait for {self.path}'s lock "
            f"(max {self.max_backlog_bytes})"))

    def _write_backlog(self) -> None:
        assert self._file is not None
        while True:
            with self._changed:
                while not self._backlog and not self._closing:
                    self._changed.wait()
                if not self._backlog:  # closing: a record queued later starts another
                    self._writer = None
                    return
                line = self._backlog[0]  # stays queued while written: later ones wait behind
            try:
                self._file.append(line)
            except Exception as error:  # noqa: BLE001 - one record's failure stops no other
                (self.on_failure or _log_failure)(error)
            with self._changed:
                self._backlog_bytes -= len(self._backlog.popleft())

    def close(self, timeout_s: float = CLOSE_WAIT_S) -> int:
        """Writes out the backlog (at most ``timeout_s``); returns how many records were left
        unwritten (logged). Later records are written as before, by a thread of their own."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
            writer = self._writer
        if writer is not None:
            writer.join(timeout_s)
        with self._changed:
            left = len(self._backlog)
        if left:
            log.error("shutdown: %d audit record(s) not written to %s: its lock was held for "
                      "%.1f s", left, self.path, timeout_s)
        return left


def _log_failure(error: BaseException) -> None:
    log.error("the audit file's writer failed: %s: %.200s", type(error).__name__, error)


class ErrorCounter(Protocol):
    """Where sink failures are counted (``Store.count_local_error``)."""

    def count_local_error(self, operation: str) -> None: ...


class SinkFailures:
    """Failures of a request record's sinks (``operation``: ``audit_file``, ``metrics``,
    ``audit_dropped``): one log line per sink per ``LOG_EVERY_S`` (so a full disk does not
    flood the log with one line per request), each failure counted in the store's errors."""

    def __init__(self, log_every_s: float = LOG_EVERY_S) -> None:
        self.log_every_s = log_every_s
        self.counts: Counter[str] = Counter()
        self._unlogged: Counter[str] = Counter()
        self._next_log: dict[str, float] = {}
        self._lock = threading.Lock()

    def failed(self, operation: str, error: BaseException,
               counter: ErrorCounter | None = None) -> None:
        now, count = time.monotonic(), 0
        with self._lock:
            self.counts[operation] += 1
            self._unlogged[operation] += 1
            due = now >= self._next_log.get(operation, 0.0)
            if due:
                self._next_log[operation] = now + self.log_every_s
                count, self._unlogged[operation] = self._unlogged[operation], 0
        if counter is not None:
            counter.count_local_error(operation)
        if due:
            log.error("the request record's %s sink failed (%d time(s) since the last such "
                      "line; the client's answer is unchanged): %s: %.200s", operation, count,
                      type(error).__name__, error)
