"""Policy reloads off the event loop. A reload pass reads every changed policy file and loads
its generator weights (``PolicyStore.refresh``, about 0.1 s for the three shipped policies on
a shared core, more for larger ones): on the loop it would hold every request of the worker.
So a request that finds a pass due starts one in a worker thread and is served the policies
last loaded; only a request naming a policy that is not loaded waits for the pass in flight,
which may be what brings it (a file added since start-up), at most ``UNKNOWN_WAIT_S``: a pass
that hangs (weights on a hung mount) holds no request without end. Passes run one at a time per
store; one in flight past ``HUNG_PASS_S`` is abandoned (``PolicyStore.abandon_pass``: later
passes skip the file it is on, and when it ends it still commits what it read of the files no
later pass committed meanwhile, so a slow load that finishes is not lost and repeated for
ever) and a new pass starts, logged. At most one abandoned pass per store: while it still
hangs, a second hung pass is logged once and waited for, so threads stuck on a mount stay
bounded."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from weakref import WeakKeyDictionary

from vilmo.policy import Policy
from vilmo.policy_store import PolicyStore, UnknownPolicy

log = logging.getLogger(__name__)

UNKNOWN_WAIT_S = 5.0
"""How long a request naming a policy not loaded waits for the pass in flight (then its
usual error: 400 ``policy_not_found``)."""
HUNG_PASS_S = 60.0
"""A pass in flight longer than this (and than ten reload intervals) is hung: abandoned for a
new one when the store allows (``PolicyStore.abandon_pass``), else logged."""


@dataclass
class _Pass:
    future: asyncio.Future[None]
    started: float
    warned: bool = False


_passes: WeakKeyDictionary[PolicyStore, _Pass] = WeakKeyDictionary()
"""Each store's pass in flight (or last run): one at a time per store."""


def start_reload(store: PolicyStore) -> asyncio.Future[None] | None:
    """The store's reload pass in flight, started now in a worker thread if one is due; None
    when none runs. Must be called on the event loop."""
    running = _passes.get(store)
    if running is not None and not running.future.done() \
            and running.future.get_loop() is asyncio.get_running_loop():
        if not _hung(store, running) or not store.abandon_pass():
            _warn_if_hung(store, running)
            return running.future
        log.error("a policy reload pass of %s has run for %.0f s: abandoned (when it ends "
                  "it commits what no later pass read); a new pass starts, skipping the file it is on",
                  store.directory, time.monotonic() - running.started)
    if not store.due():
        return None
    started = asyncio.ensure_future(asyncio.to_thread(store.refresh))
    started.add_done_callback(_log_failure)
    _passes[store] = _Pass(started, time.monotonic())
    return started


def _warn_if_hung(store: PolicyStore, running: _Pass) -> None:
    """Logs, once per pass, one in flight far longer than the reload interval that could not
    be abandoned: no later pass runs until it ends (a hung mount, a check that never
    returns)."""
    if running.warned or not _hung(store, running):
        return
    running.warned = True
    log.error("a policy reload pass of %s has run for %.0f s: no policy file change is loaded "
              "until it ends", store.directory, time.monotonic() - running.started)


def _hung(store: PolicyStore, running: _Pass) -> bool:
    in_flight = time.monotonic() - running.started
    return in_flight >= max(HUNG_PASS_S, 10 * store.reload_interval)


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
    # shielded: a caller that gives up (or times out) does not stop the pass
    await asyncio.wait([running], timeout=UNKNOWN_WAIT_S)
    return store.loaded(name)


def policy_names(store: PolicyStore) -> list[str]:
    """The loaded policies' names; starts a reload pass if one is due."""
    start_reload(store)
    return store.loaded_names()


def loaded_policies(store: PolicyStore) -> dict[str, Policy]:
    """Every loaded policy by name, in one read; starts a reload pass if one is due."""
    start_reload(store)
    return store.loaded_policies()
