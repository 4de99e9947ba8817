"""Audit records that could not be written to the store yet, on local disk.

Each process appends to a file of its own (JSON Lines, fsync'd before ``append`` returns) and
holds an exclusive ``flock`` on it for its lifetime. ``drain`` writes the records to the store,
then removes them from the file. A file whose owner died (its lock is free) is adopted by the
next process that drains, so records survive a crash of the gateway as well as of Redis. The
store's writes are idempotent, so a crash between writing and truncating replays records
without duplicating them.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

from proxy.store.records import AuditRecord

log = logging.getLogger("vilmo.store.spool")

Write = Callable[[Sequence[AuditRecord]], object]
BATCH = 500


class Spool:
    def __init__(self, directory: Path) -> None:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.directory = directory
        self._lock = threading.Lock()
        self.path, self._file = self._open()
        self._own = 0
        self._orphans = 0
        self.corrupt = 0
        """Unreadable lines skipped (a write torn by a crash before it returned)."""
        self.rescan()

    @property
    def depth(self) -> int:
        """Records waiting: this process's and those of dead processes not yet adopted."""
        return self._own + self._orphans

    def rescan(self) -> int:
        """Count the records in files of dead processes (their lock is free), so ``depth``
        shows them and the writer adopts them; files of live processes are theirs."""
        count = 0
        for path in self._orphan_paths():
            try:
                with path.open("rb") as file:
                    fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    count += file.read().count(b"\n")
            except (BlockingIOError, FileNotFoundError):
                continue
        self._orphans = count
        return count

    def append(self, records: Sequence[AuditRecord]) -> None:
        """Durable once this returns (written and fsync'd). After ``close`` a new file takes
        the records, for the next process to adopt."""
        if not records:
            return
        data = "".join(r.dumps() + "\n" for r in records).encode()
        with self._lock:
            if self._file.closed:
                self.path, self._file = self._open()
            self._file.seek(0, os.SEEK_END)
            self._file.write(data)
            self._file.flush()
            os.fsync(self._file.fileno())
            self._own += len(records)

    def drain(self, write: Write) -> int:
        """Write every spooled record with ``write`` (which raises if the store is down; the
        records then stay), oldest first; returns how many were drained."""
        drained = self._drain_orphans(write)
        with self._lock:
            if self._file.closed:
                return drained
            self._file.seek(0)
            data = self._file.read()
        records = self._parse(data)
        for start in range(0, len(records), BATCH):
            write(records[start:start + BATCH])
        with self._lock:
            self._file.seek(len(data))
            rest = self._file.read()
            self._file.truncate(0)
            self._file.seek(0)
            self._file.write(rest)
            self._file.flush()
            os.fsync(self._file.fileno())
            self._own = rest.count(b"\n")
        return drained + len(records)

    def close(self) -> None:
        """Release the file; an empty one is removed, a non-empty one waits for adoption."""
        with self._lock:
            if self._file.closed:
                return
            empty = self._own == 0 and self._file.seek(0, os.SEEK_END) == 0
            if empty:
                self.path.unlink(missing_ok=True)
            self._file.close()

    def _open(self) -> tuple[Path, BinaryIO]:
        path = self.directory / f"audit-{os.getpid()}-{secrets.token_hex(4)}.jsonl"
        private_file(path)
        file = path.open("ab+")
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return path, file

    def _orphan_paths(self) -> list[Path]:
        return sorted(p for p in self.directory.glob("audit-*.jsonl") if p != self.path)

    def _drain_orphans(self, write: Write) -> int:
        drained = 0
        for path in self._orphan_paths():
            try:
                file = path.open("rb")
            except FileNotFoundError:
                continue  # adopted and removed by another process meanwhile
            with file:
                try:
                    fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # its owner is alive and drains it itself
                if not path.exists():
                    continue
                records = self._parse(file.read())
                for start in range(0, len(records), BATCH):
                    write(records[start:start + BATCH])
                path.unlink()
                log.info("adopted %d spooled audit records from %s", len(records), path.name)
                drained += len(records)
        self._orphans = 0
        return drained

    def _parse(self, data: bytes) -> list[AuditRecord]:
        records = []
        for line in data.splitlines():
            try:
                records.append(AuditRecord.loads(line))
            except ValueError:
                self.corrupt += 1
                log.warning("skipped an unreadable spooled audit line (%d bytes)", len(line))
        return records


def private_file(path: Path) -> None:
    """Create ``path`` (and its folder) readable by this user only, if it does not exist:
    the state holds prompts, replies and key hashes."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
