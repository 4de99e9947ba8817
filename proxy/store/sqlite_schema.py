"""The embedded store's tables, and the audit query's WHERE clause.

``audit.seq`` is AUTOINCREMENT so a cursor (the last seq seen) never points at a reused row
after retention deletes old ones; ``audit.id`` is UNIQUE so a replayed record is ignored.
"""

from __future__ import annotations

import sqlite3

from proxy.store.records import AuditQuery, InvalidCursor

KEY_COLUMNS = "id, name, policy, profile, rpm, tpm, created_at, revoked_at"

SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, policy TEXT, profile TEXT,
    rpm INTEGER, tpm INTEGER, created_at REAL NOT NULL, revoked_at REAL,
    salt TEXT NOT NULL, digest TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS usage (
    key_id TEXT NOT NULL, kind TEXT NOT NULL, second INTEGER NOT NULL, amount INTEGER NOT NULL,
    PRIMARY KEY (key_id, kind, second)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cache (
    name TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, expires REAL NOT NULL,
    PRIMARY KEY (name, key));
CREATE INDEX IF NOT EXISTS cache_expires ON cache (name, expires);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, ts REAL NOT NULL,
    key TEXT NOT NULL, policy TEXT NOT NULL, model TEXT NOT NULL, action TEXT NOT NULL,
    vals TEXT NOT NULL, record TEXT NOT NULL, key_id TEXT);
CREATE INDEX IF NOT EXISTS audit_ts ON audit (ts);
CREATE INDEX IF NOT EXISTS audit_key ON audit (key, seq);
"""

AUDIT_KEY_ID = "CREATE INDEX IF NOT EXISTS audit_key_id ON audit (key_id, seq)"
"""After ``add_key_id``: a file made before the column existed has it added first."""


def add_key_id(db: sqlite3.Connection) -> None:
    """The ``audit.key_id`` column (the virtual key's id; NULL in rows written before it) and
    its index, on a file made before they existed. Two processes may race here: the loser's
    ``duplicate column`` is the winner's work."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(audit)")}
    if "key_id" not in columns:
        try:
            db.execute("ALTER TABLE audit ADD COLUMN key_id TEXT")
        except sqlite3.OperationalError as error:
            if "duplicate column" not in str(error).lower():
                raise
    db.execute(AUDIT_KEY_ID)


def parse_cursor(after: str | None) -> int | None:
    if after is None:
        return None
    if not (after.isascii() and after.isdigit()) or len(after) > 19 or int(after) > MAX_SEQ:
        raise InvalidCursor(f"invalid cursor {after[:40]!r}")
    return int(after)


MAX_SEQ = 2**63 - 1
"""SQLite's largest INTEGER: a larger cursor could not even be bound to the query."""


def audit_where(query: AuditQuery, after: int | None) -> tuple[str, tuple[object, ...]]:
    """``WHERE …`` for the query's filters and its parameters (values bound, never spliced)."""
    clauses: list[str] = []
    params: list[object] = []
    for column, value in (("key", query.key), ("key_id", query.key_id), ("policy", query.policy),
                          ("action", query.action), ("model", query.model)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if after is not None:
        clauses.append("seq < ?")
        params.append(after)
    if query.since is not None:
        clauses.append("ts >= ?")
        params.append(query.since)
    if query.until is not None:
        clauses.append("ts < ?")
        params.append(query.until)
    if query.value is not None:
        clauses.append("EXISTS (SELECT 1 FROM json_each(audit.vals) WHERE value = ?)")
        params.append(query.value)
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", tuple(params)
