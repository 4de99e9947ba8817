"""Policy reloads off the event loop. A reload pass reads every changed policy file and loads
its generator weights (``PolicyStore.refresh``, about 0.1 s for the three shipped policies on
a shared core, more for larger ones): on the loop it would hold every request of the worker.
So a request that finds a pass due starts one in a worker thread and is served the policies
last loaded; only a request naming a policy that is not loaded waits for the pass in flight,
which may be what brings it (a file added since start-up)."""

from __future__ import annotations

import asyncio
import logging
from weakref import WeakKeyDictionary

from vilmo.policy import Policy
from vilmo.policy_store import PolicyStore, UnknownPolicy

log = logging.getLogger(__name__)

_passes: WeakKeyDictionary[PolicyStore, asyncio.Future[None]] = WeakKeyDictionary()
"""Each store's pass in flight (or last run): one at a time per store."""


def start_reload(store: PolicyStore) -> asyncio.Future[None] | None:
    """The store's reload pass in flight, started now in a worker thread if one is due; None
    when none runs. Must be called on the event loop."""
    running = _passes.get(store)
    if running is not None and not running.done() \
            and running.get_loop() is asyncio.get_running_loop():
        return running
    if not store.due():
        return None
    started = asyncio.ensure_future(asyncio.to_thread(store.refresh))
    started.add_done_callback(_log_failure)
    _passes[store] = started
    return started


def _log_failure(done: asyncio.Future[None]) -> None:
    """A pass that failed as a whole (the folder unreadable): logged; the last good policies
    stay in service and the next due pass tries again."""
    if not done.cancelled() and (error := done.exception()) is not None:
        log.error("policy reload failed; serving the policies last loaded: %s", error)


async def policy_named(store: PolicyStore, name: str | None) -> Policy:
    """The named policy (the default for None) as last loaded; UnknownPolicy if absent once
    the pass in flight (if any) is done."""
    running = start_reload(store)
    try:
        return store.loaded(name)
    except UnknownPolicy:
        if running is None:
            raise
    await asyncio.wait([running])  # shielded: a caller that gives up does not stop the pass
    return store.loaded(name)


def policy_names(store: PolicyStore) -> list[str]:
    """The loaded policies' names; starts a reload pass if one is due."""
    start_reload(store)
    return store.loaded_names()


def loaded_policies(store: PolicyStore) -> dict[str, Policy]:
    """Every loaded policy by name, in one read; starts a reload pass if one is due."""
    start_reload(store)
    return store.loaded_policies()
