"""The store's caches behind vilmo's ``SharedCache`` seam, for the instruction step.

Instructions and prompt embeddings go to the store (SQLite or Redis) with the TTLs of the
``store:`` config (``instruction_cache_ttl_s``, ``embedding_cache_ttl_s``), so every replica
reads what one computed. Lookups are counted by cache and result for
``vilmo_cache_requests_total``. A failing store is a cache that holds nothing: the lookup is a
miss (the value is computed), the failure is counted in ``vilmo_store_errors_total`` (operation
``cache``), and the request goes on. A lookup may block, so with Redis the generator always
runs in a worker thread (``Guard.remote_caches``; a lone request's step may run on the event
loop only over the embedded SQLite file); a write does not block: it goes to a background writer (``CacheWriter``), because it only
records, and the instruction it follows is on the request's path to the upstream (an SQLite
write waits for the audit trail's synced commits; a Redis write is a round trip). Until written,
a value is read from the writer's queue, so this process never misses what it just computed.
Writes made during a request (``writes_after``, opened by ``proxy.middleware.UnexpectedErrors``
around each request, and by the instruction step outside one) reach the writer only when its
response has been sent: the writer's thread, woken mid-step, took the GIL from the step it was
recording (about 0.5 ms of a 4 ms step at c=1 on 2 cores, issue 16), and woken at the step's end
it competed with the upstream call and the first chunks (0.1 to 0.27 ms of the `default` monitor
stream's first token, paired; back to back, the next request then pays part of it).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from proxy.store import CacheName, Store
from vilmo.judge.shared_cache import SharedCacheUser

log = logging.getLogger(__name__)

MAX_PENDING_WRITES = 1024
"""Cache writes queued at most; past it a write is dropped (a cache may forget)."""


class _HeldWrites:
    """The writes of one block (``writes_after``); closed once handed to their writers, after
    which a late write (a timed-out step's thread) goes straight to its writer."""

    def __init__(self) -> None:
        self.items: list[tuple[CacheWriter, StoreCache, str, bytes]] = []
        self.open = True
        self.lock = threading.Lock()


_held_writes: ContextVar[_HeldWrites | None] = ContextVar("vilmo_held_cache_writes", default=None)


@contextmanager
def writes_after() -> Iterator[None]:
    """Cache writes submitted inside the block (also from a worker thread it starts: the
    context is copied) are queued for the writer when the block ends, so the writer's thread
    does not compete with the block for the GIL; until then they are read as pending. A block
    inside an open one (the instruction step inside its request's, ``proxy.middleware.
    UnexpectedErrors``) adds its writes to the outer block's: they wait for the response's last
    byte, not for the step's end (the upstream call and the first token come between)."""
    outer = _held_writes.get()
    if outer is not None and outer.open:
        yield
        return
    held = _HeldWrites()
    token = _held_writes.set(held)
    try:
        yield
    finally:
        _held_writes.reset(token)
        with held.lock:
            held.open = False
            items, held.items = held.items, []
        for writer, cache, key, value in items:
            writer.enqueue(cache, key, value)


class CacheWriter:
    """One background thread that writes cache values to the store, in order."""

    def __init__(self, max_pending: int = MAX_PENDING_WRITES) -> None:
        self._queue: queue.Queue[tuple[StoreCache, str, bytes] | None] = queue.Queue(max_pending)
        self._pending: dict[tuple[CacheName, str], bytes] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="vilmo-cache-writer", daemon=True)
        self._thread.start()

    def submit(self, cache: StoreCache, key: str, value: bytes) -> None:
        with self._lock:
            self._pending[(cache.name, key)] = value
        held = _held_writes.get()
        if held is not None:
            with held.lock:
                if held.open:
                    held.items.append((self, cache, key, value))
                    return
        self.enqueue(cache, key, value)

    def enqueue(self, cache: StoreCache, key: str, value: bytes) -> None:
        """Hand a submitted (pending) value to the writer's thread."""
        try:
            self._queue.put_nowait((cache, key, value))
        except queue.Full:  # a cache may forget: the value is computed again when asked
            with self._lock:
                self._pending.pop((cache.name, key), None)

    def pending(self, name: CacheName, key: str) -> bytes | None:
        """A value submitted and not yet written."""
        with self._lock:
            return self._pending.get((name, key))

    def close(self, timeout_s: float = 5.0) -> None:
        """Write what is queued, then stop (before the store closes); a store too slow to take
        the queue within ``timeout_s`` does not hold the shutdown (cache values may be lost)."""
        if not self._thread.is_alive():
            return
        try:
            self._queue.put(None, timeout=timeout_s)
        except queue.Full:
            log.warning("cache writer: store too slow, %d values not written",
                        self._queue.qsize())
            return
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                cache, key, value = item
                cache.write(key, value)
                with self._lock:
                    if self._pending.get((cache.name, key)) is value:
                        del self._pending[(cache.name, key)]
            finally:
                self._queue.task_done()


class StoreCache:
    """One of the store's caches as a vilmo ``SharedCache``, with its hit counters."""

    def __init__(self, store: Store, name: CacheName, writer: CacheWriter | None = None) -> None:
        self.store = store
        self.name: CacheName = name
        self.writer = writer
        """Writes in the background; None: ``put`` writes before it returns."""
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        found = self.writer.pending(self.name, key) if self.writer is not None else None
        if found is None:
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
        if self.writer is not None:
            self.writer.submit(self, key, value)
        else:
            self.write(key, value)

    def write(self, key: str, value: bytes) -> None:
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


def attach_caches(generator: object, store: Store, writer: CacheWriter | None = None,
                  ) -> dict[CacheName, StoreCache]:
    """Point the instruction generator's caches at the store, writing through ``writer`` (None:
    each write before ``put`` returns); the caches, by name (empty when the generator keeps no
    caches)."""
    if not isinstance(generator, SharedCacheUser):
        return {}
    caches: dict[CacheName, StoreCache] = {
        "instruction": StoreCache(store, "instruction", writer),
        "embedding": StoreCache(store, "embedding", writer)}
    generator.use_caches(caches["instruction"], caches["embedding"])
    return caches
