"""Virtual client keys on the request path: finding the key, its rpm/tpm budgets, the charge.

A key is read from the store on every request, so a revocation holds on every replica at once
while the store is reachable. When the store cannot be reached, a key this process verified
within ``VERIFIED_TTL_S`` is still served (the gateway keeps serving through a Redis outage, its
limits degrading by ``store.limits_on_error``); any other virtual key is refused, never let
through unverified. A key revoked through this replica is forgotten here at once; another
replica that checked the key before the revocation (any check after it forgets the key) may
serve it during an outage until ``VERIFIED_TTL_S`` after that check, so at most
``VERIFIED_TTL_S`` after the revocation.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections import OrderedDict

from proxy.errors import KeyRateLimited
from proxy.store import Store, StoreError, VirtualKey

log = logging.getLogger(__name__)

LIMITED_PATHS = frozenset({"/v1/chat/completions", "/v1/values/check"})
VERIFIED_TTL_S = 300.0
VERIFIED_MAX = 10_000


class VerifiedKeys:
    """Keys this process verified recently (by a hash of the presented key), for outages only."""

    def __init__(self, ttl_s: float = VERIFIED_TTL_S, max_keys: int = VERIFIED_MAX) -> None:
        self.ttl_s = ttl_s
        self.max_keys = max_keys
        self._keys: OrderedDict[str, tuple[VirtualKey, float]] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, presented: str, key: VirtualKey | None) -> None:
        digest = _digest(presented)
        with self._lock:
            if key is None:  # unknown or revoked: forget it at once
                self._keys.pop(digest, None)
                return
            self._keys[digest] = (key, time.monotonic())
            self._keys.move_to_end(digest)
            while len(self._keys) > self.max_keys:
                self._keys.popitem(last=False)

    def forget(self, key_id: str) -> None:
        """A key revoked through this replica: never served from here again, outage or not."""
        with self._lock:
            for digest in [d for d, (key, _) in self._keys.items() if key.id == key_id]:
                del self._keys[digest]

    def recall(self, presented: str) -> VirtualKey | None:
        with self._lock:
            found = self._keys.get(_digest(presented))
        if found is None or time.monotonic() - found[1] > self.ttl_s:
            return None
        return found[0]


async def find_virtual_key(store: Store, presented: str,
                           verified: VerifiedKeys | None = None) -> VirtualKey | None:
    """The active key, from the store; during an outage, one verified recently; else None."""
    try:
        found = await asyncio.to_thread(store.find_key, presented)
    except StoreError as error:
        recalled = verified.recall(presented) if verified is not None else None
        if recalled is None:
            log.warning("virtual key not checked (store unreachable), refused: %s", error)
        return recalled
    if verified is not None:
        verified.remember(presented, found)
    return found


async def admit(store: Store, key: VirtualKey) -> KeyRateLimited | None:
    """None when the key's budgets have room; else the 429 to answer."""
    decision = await asyncio.to_thread(store.admit, key.id, key.rpm, key.tpm)
    if decision.allowed:
        return None
    retry = max(1, decision.retry_after_s)
    reason = decision.reason or ("store" if decision.degraded else "rpm")
    what = {"rpm": "requests", "tpm": "tokens"}.get(reason, "requests")
    message = (f"this key's limits cannot be checked now (the store is unreachable); retry in "
               f"{retry} s" if reason == "store"
               else f"this key is over its {what} per minute limit; retry in {retry} s")
    return KeyRateLimited(message, code=reason, headers={"retry-after": str(retry)})


def charge(store: Store, key: VirtualKey, tokens: int) -> None:
    """Charge the request's tokens to the key, off the event loop (not awaited: the reply is
    already out; a failure is counted by the store)."""
    if not tokens or key.tpm is None:
        return
    asyncio.get_running_loop().run_in_executor(None, store.charge_tokens, key.id, tokens)


def _digest(presented: str) -> str:
    return hashlib.sha256(presented.encode()).hexdigest()
