"""The embedded backend: one SQLite file in WAL mode, shared by the processes of one host.

Each thread has its own connection (WAL lets readers run beside the one writer); read-modify-
write steps (limits) run in ``BEGIN IMMEDIATE`` transactions, which take the write lock up front,
so they are atomic across threads and processes. Audit writes commit with ``synchronous=FULL``
(on disk when they return); counters and caches use ``NORMAL`` (safe against a crash of the
process, not of the machine, which is enough for a one-minute window).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from proxy.store import keys
from proxy.store.config import StoreSettings
from proxy.store.limits import oldest_second, reservation, retry_after
from proxy.store.records import (
    AuditPage,
    AuditQuery,
    AuditRecord,
    CacheName,
    IssuedKey,
    LimitDecision,
    StoreUnavailable,
    VirtualKey,
)
from proxy.store.spool import private_file
from proxy.store.sqlite_schema import KEY_COLUMNS, SCHEMA, add_key_id, audit_where, parse_cursor

CACHE_TRIM_EVERY = 64
"""Sets between checks of a cache's size (counting rows is a scan)."""


class SQLiteBackend:
    name = "sqlite"

    def __init__(self, settings: StoreSettings, clock: Callable[[], float] = time.time) -> None:
        self.path: Path = settings.state_path()
        private_file(self.path)
        self._settings = settings
        self._clock = clock
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._cache_sets = 0
        with self._unavailable_on_lock_or_disk_errors():
            self._db().executescript(SCHEMA)
            add_key_id(self._db())

    # --- keys --------------------------------------------------------------------------------

    def create_key(self, name: str, policy: str | None, profile: str | None,
                   rpm: int | None, tpm: int | None) -> IssuedKey:
        while True:  # a taken id (2^-64 odds per key) just draws again
            minted = keys.mint_key()
            record = VirtualKey(minted.id, name, policy, profile, rpm, tpm, self._clock())
            with self._transaction() as db:
                taken = db.execute(
                    f"INSERT OR IGNORE INTO keys({KEY_COLUMNS}, salt, digest) VALUES "
                    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (record.id, name, policy, profile, rpm, tpm, record.created_at, None,
                     minted.salt, minted.digest)).rowcount == 0
            if not taken:
                return IssuedKey(record, minted.key)

    def list_keys(self) -> list[VirtualKey]:
        rows = self._read(f"SELECT {KEY_COLUMNS} FROM keys ORDER BY created_at, id")
        return [VirtualKey(*row) for row in rows]

    def get_key(self, key_id: str) -> VirtualKey | None:
        rows = self._read(f"SELECT {KEY_COLUMNS} FROM keys WHERE id = ?", (key_id,))
        return VirtualKey(*rows[0]) if rows else None

    def find_key(self, presented: str) -> VirtualKey | None:
        parsed = keys.parse_key(presented)
        if parsed is None:
            return None
        rows = self._read(f"SELECT {KEY_COLUMNS}, salt, digest FROM keys WHERE id = ?",
                          (parsed[0],))
        if not rows or not keys.secret_matches(rows[0][-2], rows[0][-1], parsed[1]):
            return None
        record = VirtualKey(*rows[0][:-2])
        return record if record.active else None

    def revoke_key(self, key_id: str) -> bool:
        with self._transaction() as db:
            db.execute("UPDATE keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                       (self._clock(), key_id))
            return db.execute("SELECT 1 FROM keys WHERE id = ?", (key_id,)).fetchone() is not None

    def bind_key(self, key_id: str, policy: str | None,
                 profile: str | None) -> VirtualKey | None:
        return self._update(key_id, "policy = ?, profile = ?", (policy, profile))

    def set_limits(self, key_id: str, rpm: int | None, tpm: int | None) -> VirtualKey | None:
        return self._update(key_id, "rpm = ?, tpm = ?", (rpm, tpm))

    def _update(self, key_id: str, assignments: str,
                values: tuple[object, ...]) -> VirtualKey | None:
        with self._transaction() as db:
            db.execute(f"UPDATE keys SET {assignments} WHERE id = ?", (*values, key_id))
        return self.get_key(key_id)

    # --- limits --------------------------------------------------------------------------------

    def admit(self, key_id: str, rpm: int | None, tpm: int | None) -> LimitDecision:
        now = int(self._clock())
        with self._transaction() as db:
            db.execute("DELETE FROM usage WHERE key_id = ? AND second < ?",
                       (key_id, oldest_second(now)))
            for kind, limit in (("tpm", tpm), ("rpm", rpm)):
                if limit is None:
                    continue
                buckets = self._buckets(db, key_id, kind)
                used = sum(n for _, n in buckets)
                if used >= limit:
                    return LimitDecision(False, retry_after(buckets, used, limit, now),
                                         "rpm" if kind == "rpm" else "tpm")
            if rpm is not None:
                self._add_usage(db, key_id, "rpm", now, 1)
        return LimitDecision(True)

    def reserve_tokens(self, key_id: str, tpm: int, least: int, most: int) -> LimitDecision:
        now = int(self._clock())
        with self._transaction() as db:
            db.execute("DELETE FROM usage WHERE key_id = ? AND kind = 'tpm' AND second < ?",
                       (key_id, oldest_second(now)))
            buckets = self._buckets(db, key_id, "tpm")
            used = sum(n for _, n in buckets)
            reserved = reservation(used, tpm, least, most)
            if reserved is None:
                return LimitDecision(False, retry_after(buckets, used, tpm - least + 1, now),
                                     "tpm")
            self._add_usage(db, key_id, "tpm", now, reserved)
        return LimitDecision(True, reserved=reserved, reserved_at=now)

    def charge_tokens(self, key_id: str, tokens: int, refund: int = 0,
                      refund_at: int = 0) -> None:
        now = int(self._clock())
        with self._transaction() as db:
            if refund > 0 and refund_at >= oldest_second(now):
                db.execute("UPDATE usage SET amount = MAX(0, amount - ?) "
                           "WHERE key_id = ? AND kind = 'tpm' AND second = ?",
                           (refund, key_id, refund_at))
            if tokens > 0:
                self._add_usage(db, key_id, "tpm", now, tokens)

    @staticmethod
    def _buckets(db: sqlite3.Connection, key_id: str, kind: str) -> list[tuple[int, int]]:
        """The window's ``(second, amount)`` buckets of one kind, oldest first."""
        return [(int(s), int(n)) for s, n in db.execute(
            "SELECT second, amount FROM usage WHERE key_id = ? AND kind = ? ORDER BY second",
            (key_id, kind))]

    @staticmethod
    def _add_usage(db: sqlite3.Connection, key_id: str, kind: str, now: int, n: int) -> None:
        db.execute("INSERT INTO usage(key_id, kind, second, amount) VALUES (?, ?, ?, ?) "
                   "ON CONFLICT DO UPDATE SET amount = amount + excluded.amount",
                   (key_id, kind, now, n))

    # --- caches ----------------------------------------------------------------------------------

    def cache_get(self, cache: CacheName, key: str) -> bytes | None:
        rows = self._read("SELECT value FROM cache WHERE name = ? AND key = ? AND expires > ?",
                          (cache, key, self._clock()))
        return bytes(rows[0][0]) if rows else None

    def cache_set(self, cache: CacheName, key: str, value: bytes, ttl_s: float) -> None:
        now = self._clock()
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO cache(name, key, value, expires) "
                       "VALUES (?, ?, ?, ?)", (cache, key, value, now + ttl_s))
            with self._lock:
                self._cache_sets += 1
                trim = self._cache_sets % CACHE_TRIM_EVERY == 0
            if trim:
                db.execute("DELETE FROM cache WHERE name = ? AND expires <= ?", (cache, now))
                db.execute("DELETE FROM cache WHERE name = ? AND key IN (SELECT key FROM cache "
                           "WHERE name = ? ORDER BY expires DESC LIMIT -1 OFFSET ?)",
                           (cache, cache, self._settings.cache_max_entries))

    # --- the audit trail ---------------------------------------------------------------------

    def append_audit(self, records: Sequence[AuditRecord]) -> int:
        with self._transaction(synchronous="FULL") as db:
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO audit(id, ts, key, key_id, policy, model, action, vals, "
                "record) VALUES (?, ?, ?, ?, ?, ?, ?, json(?), ?)",
                [(r.id, r.ts, r.key, r.key_id, r.policy, r.model, r.action,
                  _json_list(r.values), r.dumps()) for r in records])
            return db.total_changes - before

    def query_audit(self, query: AuditQuery) -> AuditPage:
        where, params = audit_where(query, parse_cursor(query.after))
        rows = self._read(f"SELECT seq, record FROM audit {where} ORDER BY seq DESC LIMIT ?",
                          (*params, query.limit + 1))
        page = rows[:query.limit]
        more = len(rows) > query.limit
        return AuditPage(tuple(AuditRecord.loads(r[1]) for r in page),
                         str(page[-1][0]) if more else None)

    def prune(self) -> int:
        now = self._clock()
        retention = self._settings.retention_s
        cap = self._settings.audit_max_records
        with self._transaction() as db:
            removed = 0
            if retention is not None:
                removed += db.execute("DELETE FROM audit WHERE ts < ?",
                                      (now - retention,)).rowcount
            if cap is not None:
                removed += db.execute("DELETE FROM audit WHERE seq <= (SELECT seq FROM audit "
                                      "ORDER BY seq DESC LIMIT 1 OFFSET ?)", (cap,)).rowcount
            db.execute("DELETE FROM usage WHERE second < ?", (oldest_second(int(now)),))
            db.execute("DELETE FROM cache WHERE expires <= ?", (now,))
        return removed

    def close(self) -> None:
        with self._lock:
            for db in self._connections:
                db.close()
            self._connections.clear()
        self._local = threading.local()

    # --- connections ---------------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            with self._unavailable_on_lock_or_disk_errors():
                db = sqlite3.connect(self.path, timeout=self._settings.timeout_s,
                                     isolation_level=None, check_same_thread=False)
                db.execute("PRAGMA journal_mode=WAL")
            self._local.db = db
            with self._lock:
                self._connections.append(db)
        return db

    def _read(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        with self._unavailable_on_lock_or_disk_errors():
            return self._db().execute(sql, params).fetchall()

    @contextmanager
    def _transaction(self, synchronous: str = "NORMAL") -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``."""
        with self._unavailable_on_lock_or_disk_errors():
            db = self._db()
            db.execute(f"PRAGMA synchronous={synchronous}")
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    @contextmanager
    def _unavailable_on_lock_or_disk_errors(self) -> Iterator[None]:
        """SQLite's errors enter here: a lock held past ``timeout_s`` or a disk error is
        ``StoreUnavailable``; an error in a statement is a bug and propagates."""
        try:
            yield
        except sqlite3.OperationalError as error:
            if not _is_unavailable(error):
                raise
            raise StoreUnavailable(f"sqlite {self.path}: {error}") from error


def _json_list(values: Sequence[str]) -> str:
    return json.dumps(list(values))


_UNAVAILABLE = ("locked", "busy", "disk", "unable to open", "readonly", "read-only")


def _is_unavailable(error: sqlite3.OperationalError) -> bool:
    """Lock timeouts and I/O trouble, as opposed to a bug in a statement."""
    return any(word in str(error).lower() for word in _UNAVAILABLE)
