"""``Store``: what the gateway, the admin API and the CLI use, over either backend.

It adds what a backend should not have to know: how to degrade when the backend is unreachable
(limits by ``limits_on_error``, caches as misses, audit records to the spool; after a failure
that kind of operation is skipped for ``retry_s``), the counters the metrics layer reads, and
the audit trail's background writer. Methods are synchronous (SQLite is, and one code path serves the CLI
too); from the event loop call them with ``await asyncio.to_thread(...)``, except
``audit.write``, which never blocks on the store.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import ParamSpec, TypeVar

from proxy.store.backend import Backend
from proxy.store.config import StoreSettings
from proxy.store.records import (
    ALLOWED,
    MAX_PAGE,
    AuditPage,
    AuditQuery,
    AuditRecord,
    CacheName,
    IssuedKey,
    LimitDecision,
    StoreFull,
    StoreHealth,
    StoreUnavailable,
    VirtualKey,
)
from proxy.store.spool import Spool
from proxy.store.writer import AuditWriter

log = logging.getLogger("vilmo.store")

MAX_NAME_CHARS = 128
MAX_CHARGE = 10**12
"""The most one settle charges: past any ``tpm`` (at most 10^9), so a reply's usage fills the
window however large the upstream says it was, and within what both backends count exactly
(Redis's Lua numbers are doubles, SQLite's INTEGER 64 bits)."""
P = ParamSpec("P")
T = TypeVar("T")


class Store:
    def __init__(self, backend: Backend, settings: StoreSettings) -> None:
        self.backend = backend
        self.settings = settings
        self._skip_until: dict[str, float] = {}
        """Per kind of operation (``keys``, ``limits``, ``cache``, ``audit``): skipped until
        then after a failure. One breaker for all let one failed cache write take every key's
        limits off (``fail_open``) or refuse every limited key (``fail_closed``)."""
        self._full_logged = 0.0
        self._errors: Counter[str] = Counter()
        self._degraded = 0
        self._reachable = True
        self._closed = False
        self._lock = threading.Lock()
        self.audit = AuditWriter(backend.append_audit, Spool(settings.spool_path()),
                                 queue_size=settings.audit_queue, retry_s=settings.retry_s,
                                 maintain=backend.prune, on_error=self._count_error,
                                 on_ok=self._mark_reachable)
        """The audit sink: ``store.audit.write(record)`` from the request path."""

    # --- keys (errors propagate: the admin API answers 503, auth refuses) ------------------

    def create_key(self, name: str, *, policy: str | None = None, profile: str | None = None,
                   rpm: int | None = None, tpm: int | None = None) -> IssuedKey:
        """A new key; ``IssuedKey.key`` is the only copy of the plaintext that will exist."""
        if not name or len(name) > MAX_NAME_CHARS:
            raise ValueError(f"name must be 1 to {MAX_NAME_CHARS} characters")
        _check_limits(rpm, tpm)
        return self._call("keys", self.backend.create_key, name, policy, profile, rpm, tpm)

    def list_keys(self) -> list[VirtualKey]:
        return self._call("keys", self.backend.list_keys)

    def get_key(self, key_id: str) -> VirtualKey | None:
        return self._call("keys", self.backend.get_key, key_id)

    def find_key(self, presented: str) -> VirtualKey | None:
        """The active key a client presented, read from the store on every call (no local
        cache), so a revocation holds on every replica at once."""
        return self._call("keys", self.backend.find_key, presented)

    def revoke_key(self, key_id: str) -> bool:
        """False when there is no such key; revoking twice keeps the first time."""
        return self._call("keys", self.backend.revoke_key, key_id)

    def bind_key(self, key_id: str, *, policy: str | None,
                 profile: str | None) -> VirtualKey | None:
        """Set the key's policy and value profile (None clears); None when there is no key."""
        return self._call("keys", self.backend.bind_key, key_id, policy, profile)

    def set_limits(self, key_id: str, *, rpm: int | None, tpm: int | None) -> VirtualKey | None:
        _check_limits(rpm, tpm)
        return self._call("keys", self.backend.set_limits, key_id, rpm, tpm)

    # --- limits (degrade by limits_on_error) -----------------------------------------------

    def admit(self, key_id: str, rpm: int | None, tpm: int | None) -> LimitDecision:
        """Count one request against the key's budgets; refused: ``retry_after_s`` for the
        ``Retry-After`` header. Its tokens are reserved with ``reserve_tokens`` once the
        request is read, and settled with ``charge_tokens`` once it is done."""
        if rpm is None and tpm is None:
            return ALLOWED
        try:
            return self._call("limits", self.backend.admit, key_id, rpm, tpm)
        except StoreUnavailable:
            return self._degraded_decision()

    def reserve_tokens(self, key_id: str, tpm: int, least: int, most: int) -> LimitDecision:
        """Hold a request's tokens in the key's window before the upstream is called: up to
        ``most``, as far as the window has room, at least ``least``; refused (``tpm``, with
        ``retry_after_s``) when not even ``least`` fits. Settle with ``charge_tokens``
        (``refund`` = ``reserved``, ``refund_at`` = ``reserved_at``)."""
        try:
            return self._call("limits", self.backend.reserve_tokens, key_id, tpm, least, most)
        except StoreUnavailable:
            return self._degraded_decision()

    def charge_tokens(self, key_id: str, tokens: int, refund: int = 0,
                      refund_at: int = 0) -> None:
        """Add a request's tokens to the key's window (checked by the next ``admit`` and
        ``reserve_tokens``) and take back, in the same step, what was reserved for it
        (``refund`` tokens counted in second ``refund_at``); lost, and counted, when the
        store is unreachable."""
        if tokens <= 0 and refund <= 0:
            return
        try:
            self._call("limits", self.backend.charge_tokens, key_id,
                       min(MAX_CHARGE, max(0, tokens)), min(MAX_CHARGE, max(0, refund)),
                       refund_at)
        except StoreUnavailable:
            pass

    def _degraded_decision(self) -> LimitDecision:
        """The store is unreachable: ``limits_on_error`` decides (and it is counted)."""
        with self._lock:
            self._degraded += 1
        if self.settings.limits_on_error == "fail_open":
            return LimitDecision(True, degraded=True)
        return LimitDecision(False, retry_after_s=1, degraded=True)

    # --- caches (a failure is a miss) -----------------------------------------------------

    def cache_get(self, cache: CacheName, key: str) -> bytes | None:
        try:
            return self._call("cache", self.backend.cache_get, cache, _cache_key(key))
        except StoreUnavailable:
            return None

    def cache_set(self, cache: CacheName, key: str, value: bytes) -> None:
        """Keep ``value`` for the cache's TTL; values over ``cache_max_value_bytes`` are not
        kept, so one huge prompt cannot evict the rest."""
        if len(value) > self.settings.cache_max_value_bytes:
            return
        ttl = (self.settings.instruction_cache_ttl_s if cache == "instruction"
               else self.settings.embedding_cache_ttl_s)
        try:
            self._call("cache", self.backend.cache_set, cache, _cache_key(key), value, ttl)
        except StoreUnavailable:
            pass

    def count_error(self, operation: str, error: BaseException) -> None:
        """Count a failure a caller caught itself (``vilmo_store_errors_total``)."""
        self._count_error(operation, error)

    def count_local_error(self, operation: str) -> None:
        """Count a failure beside the store (the JSON Lines audit file, the metrics): in
        ``vilmo_store_errors_total``, the store's reachability untouched."""
        with self._lock:
            self._errors[operation] += 1

    # --- the audit trail -------------------------------------------------------------------

    def query_audit(self, query: AuditQuery) -> AuditPage:
        """A page of the trail, newest first (by when records reached the trail)."""
        if query.limit < 1:
            raise ValueError("limit must be at least 1")
        if query.limit > MAX_PAGE:
            query = replace(query, limit=MAX_PAGE)
        return self._call("audit", self.backend.query_audit, query)

    def export_audit(self, query: AuditQuery) -> Iterator[AuditRecord]:
        """Every matching record, newest first, page by page (for JSON Lines export)."""
        page_query = replace(query, limit=MAX_PAGE)
        while True:
            page = self.query_audit(page_query)
            yield from page.data
            if page.next is None:
                return
            page_query = replace(page_query, after=page.next)

    # --- health and lifetime -----------------------------------------------------------------

    def health(self) -> StoreHealth:
        with self._lock:
            return StoreHealth(backend=self.backend.name, reachable=self._reachable,
                               errors=dict(self._errors), audit_queue=self.audit.queued,
                               spool_depth=self.audit.spool.depth,
                               degraded_limits=self._degraded)

    def close(self) -> None:
        """Write out (or spool) the queued audit records, then close the backend; idempotent."""
        if self._closed:
            return
        self._closed = True
        self.audit.close()
        self.backend.close()

    def _call(self, operation: str, method: Callable[P, T], *args: P.args,
              **kwargs: P.kwargs) -> T:
        """Call the backend, unless this kind of operation failed less than ``retry_s`` ago:
        then fail at once, so a Redis that times out costs one request a timeout, not every
        request. A full store (``StoreFull``: it answered at once, refusing a write) trips no
        breaker: at ``maxmemory`` the limit scripts and every read still run."""
        if time.monotonic() < self._skip_until.get(operation, 0.0):
            skipped = StoreUnavailable(f"{self.backend.name} unreachable; retrying shortly")
            self._count_error(operation, skipped)
            raise skipped
        try:
            result = method(*args, **kwargs)
        except StoreFull as error:
            self._count_error(operation, error)
            now = time.monotonic()
            if now >= self._full_logged:  # a warning per retry_s, not one per write
                self._full_logged = now + self.settings.retry_s
                log.warning("%s (during %s); writes refused, limits still counted", error,
                            operation)
            raise
        except StoreUnavailable as error:
            self._skip_until[operation] = time.monotonic() + self.settings.retry_s
            self._count_error(operation, error)
            log.warning("%s (during %s); %s skipped for %.1f s%s", error, operation, operation,
                        self.settings.retry_s,
                        f", limits {self.settings.limits_on_error} meanwhile"
                        if operation == "limits" else "")
            raise
        self._mark_reachable(operation)
        return result

    def _mark_reachable(self, operation: str | None = None) -> None:
        self._reachable = True
        if operation is not None:
            self._skip_until.pop(operation, None)

    def _count_error(self, operation: str, error: BaseException) -> None:
        """Counted; the store is unreachable after a ``StoreUnavailable``, but for a full
        store's (``StoreFull``: it answered, refusing a write, and serves reads and limits)."""
        with self._lock:
            self._errors[operation] += 1
            if not isinstance(error, StoreFull):
                self._reachable = not isinstance(error, StoreUnavailable)


def _check_limits(rpm: int | None, tpm: int | None) -> None:
    for name, value in (("rpm", rpm), ("tpm", tpm)):
        if value is not None and not 1 <= value <= 10**9:
            raise ValueError(f"{name} must be between 1 and 10^9, or null for no limit")


def _cache_key(key: str) -> str:
    """A fixed-length key, whatever the prompt's length."""
    return hashlib.sha256(key.encode()).hexdigest()
