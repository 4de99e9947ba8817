"""The gateway's state: virtual keys, per-key limits, caches and the audit trail.

``open_store(settings)`` gives a ``Store`` over Redis when ``store.url`` is set (shared by every
replica) and over an embedded SQLite file otherwise (one host, durable across restarts).
"""

from __future__ import annotations

from proxy.store.backend import Backend
from proxy.store.config import StoreSettings
from proxy.store.keys import looks_like_virtual_key
from proxy.store.records import (
    AuditPage,
    AuditQuery,
    AuditRecord,
    CacheName,
    InvalidCursor,
    IssuedKey,
    LimitDecision,
    StoreError,
    StoreFull,
    StoreHealth,
    StoreUnavailable,
    VirtualKey,
)
from proxy.store.store import Store
from proxy.store.writer import AuditWriter

__all__ = [
    "AuditPage", "AuditQuery", "AuditRecord", "AuditWriter", "Backend", "CacheName",
    "InvalidCursor", "IssuedKey", "LimitDecision", "Store", "StoreError", "StoreFull", "StoreHealth",
    "StoreSettings", "StoreUnavailable", "VirtualKey", "looks_like_virtual_key", "open_store",
]


def open_store(settings: StoreSettings) -> Store:
    """The configured store. Opening Redis does not connect yet, so a gateway starts (and
    spools) while Redis is down; SQLite creates its file and tables here."""
    backend: Backend
    if settings.url:
        from proxy.store.redis_store import RedisBackend
        backend = RedisBackend(settings)
    else:
        from proxy.store.sqlite_store import SQLiteBackend
        backend = SQLiteBackend(settings)
    return Store(backend, settings)
