"""The store's caches behind vilmo's ``SharedCache`` seam, for the instruction step.

Instructions and prompt embeddings go to the store (SQLite or Redis) with the TTLs of the
``store:`` config (``instruction_cache_ttl_s``, ``embedding_cache_ttl_s``), so every replica
reads what one computed. Lookups are counted by cache and result for
``vilmo_cache_requests_total``. A failing store is a cache that holds nothing: the lookup is a
miss (the value is computed), the failure is counted in ``vilmo_store_errors_total`` (operation
``cache``), and the request goes on. The generator runs in a worker thread, so these calls may
block.
"""

from __future__ import annotations

import logging
import threading

from proxy.store import CacheName, Store
from vilmo.judge.shared_cache import SharedCacheUser

log = logging.getLogger(__name__)


class StoreCache:
    """One of the store's caches as a vilmo ``SharedCache``, with its hit counters."""

    def __init__(self, store: Store, name: CacheName) -> None:
        self.store = store
        self.name: CacheName = name
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        try:
            found = self.store.cache_get(self.name, key)  # unreachable: None, counted
        except Exception as error:  # noqa: BLE001 - a cache never fails a request
            self._failed(error)
            found = None
        with self._lock:
            if found is None:
                self.misses += 1
            else:
                self.hits += 1
        return found

    def put(self, key: str, value: bytes) -> None:
        try:
            self.store.cache_set(self.name, key, value)
        except Exception as error:  # noqa: BLE001 - as for get
            self._failed(error)

    def counts(self) -> tuple[int, int]:
        with self._lock:
            return self.hits, self.misses

    def _failed(self, error: Exception) -> None:
        self.store.count_error("cache", error)
        log.warning("%s cache: %s: %.200s; computed without it", self.name,
                    type(error).__name__, error)  # redacted whole, then cut (the log factory)


def attach_caches(generator: object, store: Store) -> dict[CacheName, StoreCache]:
    """Point the instruction generator's caches at the store; the caches, by name (empty when
    the generator keeps no caches)."""
    if not isinstance(generator, SharedCacheUser):
        return {}
    caches: dict[CacheName, StoreCache] = {
        "instruction": StoreCache(store, "instruction"),
        "embedding": StoreCache(store, "embedding")}
    generator.use_caches(caches["instruction"], caches["embedding"])
    return caches
