"""The seam between the gateway's ``Store`` and where state is kept: SQLite or Redis.

Every method is synchronous and raises ``StoreUnavailable`` when the backend cannot be reached;
``Store`` decides how to degrade (limits by ``limits_on_error``, caches as misses, audit records
to the spool), so a backend only has to be correct, not resilient.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from proxy.store.records import (
    AuditPage,
    AuditQuery,
    AuditRecord,
    CacheName,
    IssuedKey,
    LimitDecision,
    VirtualKey,
)


class Backend(Protocol):
    name: str
    """"sqlite" or "redis", for logs and health."""

    def create_key(self, name: str, policy: str | None, profile: str | None,
                   rpm: int | None, tpm: int | None) -> IssuedKey: ...

    def list_keys(self) -> list[VirtualKey]: ...

    def get_key(self, key_id: str) -> VirtualKey | None: ...

    def find_key(self, presented: str) -> VirtualKey | None:
        """The active key the client presented; None for unknown, wrong or revoked keys."""
        ...

    def revoke_key(self, key_id: str) -> bool: ...

    def bind_key(self, key_id: str, policy: str | None,
                 profile: str | None) -> VirtualKey | None: ...

    def set_limits(self, key_id: str, rpm: int | None, tpm: int | None) -> VirtualKey | None: ...

    def admit(self, key_id: str, rpm: int | None, tpm: int | None) -> LimitDecision:
        """Count one request if both budgets allow it, atomically across replicas."""
        ...

    def reserve_tokens(self, key_id: str, tpm: int, least: int, most: int) -> LimitDecision:
        """Hold a request's tokens against ``tpm``, atomically across replicas (see
        ``limits.reservation``); refused (``tpm``, with ``retry_after_s``) when not even
        ``least`` fits in the window now."""
        ...

    def charge_tokens(self, key_id: str, tokens: int, refund: int = 0,
                      refund_at: int = 0) -> None:
        """Add ``tokens`` now, and, in the same step, take back ``refund`` tokens reserved in
        second ``refund_at`` (while that second is still in the window)."""
        ...

    def cache_get(self, cache: CacheName, key: str) -> bytes | None: ...

    def cache_set(self, cache: CacheName, key: str, value: bytes, ttl_s: float) -> None: ...

    def append_audit(self, records: Sequence[AuditRecord]) -> int:
        """Store the records whose id is new; returns how many were new (idempotent)."""
        ...

    def query_audit(self, query: AuditQuery) -> AuditPage: ...

    def prune(self) -> int:
        """Apply the audit retention and drop stale counters; returns audit records removed."""
        ...

    def close(self) -> None: ...
