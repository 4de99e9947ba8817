"""Which refused chat requests get an audit record, where the refusals come as fast as the
gateway can answer them. Each record is a durable write to the store and a JSON Lines line, and
the trail keeps at most ``store.audit_max_records``: unbounded, such refusals would push every
other tenant's records out of it. Every one is counted in the metrics
(``vilmo_requests_total{status=...}``), and one log line per interval says how many were left
out of the audit trail.

- ``RefusalSampler``, for want of a valid key (401; anyone can send them): the first refusal
  from each client address in each interval is recorded, from at most ``max_addresses``
  addresses per interval.
- ``LimitSampler``, a virtual key over its limits (429 ``rpm``, ``tpm``, or ``store`` while
  limits fail closed), or refused (4xx) before any upstream call and without a value verdict
  (``proxy.middleware.key_refusal_sample``; no limit counts those): the first of each key and
  code or status in each interval is recorded, and its record's ``suppressed`` says how many of
  the key's were left out since the key's last recorded one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

INTERVAL_S = 60.0
MAX_ADDRESSES = 60
"""Audited refusals per interval at most, whatever the addresses (one a second on average)."""


class RefusalSampler:
    """Decides, per refusal, whether it is audited. Called on the event loop only (no lock)."""

    def __init__(self, interval_s: float = INTERVAL_S, max_addresses: int = MAX_ADDRESSES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self.max_addresses = max_addresses
        self.clock = clock
        self._started = clock()
        self._audited: set[str] = set()
        self._left_out = 0

    def audits(self, address: str) -> bool:
        """True for the first refusal from ``address`` in this interval (while there is room);
        False: count it in the metrics only."""
        now = self.clock()
        if now - self._started >= self.interval_s:
            if self._left_out:
                log.warning("%d requests refused for want of a valid key in the last %.0f s "
                            "were counted in the metrics but not audited (the first from each "
                            "address is)", self._left_out, now - self._started)
            self._started, self._audited, self._left_out = now, set(), 0
        if address not in self._audited and len(self._audited) < self.max_addresses:
            self._audited.add(address)
            return True
        self._left_out += 1
        return False


MAX_PENDING_KEYS = 10_000
"""Keys whose left-out count waits for their next record, at most (a count past it is in the
log line and the metrics only)."""


class LimitSampler:
    """Decides, per refusal of a key over its limits, whether it is audited: the first of each
    key and refusal code (``"<key id>/<code>"``: ``rpm``, ``tpm``, ``store``, or the status of a
    refusal no limit counted, ``400``, ``413``...) in an interval, so
    a key's own flood leaves one record a minute while a store that cannot be checked, which is
    no flood of the key's, is still audited after an ``rpm`` refusal. Called on the event loop
    only (no lock)."""

    def __init__(self, interval_s: float = INTERVAL_S, clock: Callable[[], float] = time.monotonic,
                 max_pending: int = MAX_PENDING_KEYS) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self.max_pending = max_pending
        self._started = clock()
        self._audited: set[str] = set()
        self._pending: dict[str, int] = {}
        """The key's refusals left out since its last audited one."""
        self._left_out = 0

    def audits(self, key_id: str) -> int | None:
        """For the first refusal of ``key_id`` (a key and its refusal code) in this interval, how
        many of its refusals were left out since its last audited one (the record's
        ``suppressed``); None: count it in the metrics only."""
        now = self.clock()
        if now - self._started >= self.interval_s:
            if self._left_out:
                log.warning("%d requests of virtual keys refused (by their limits, or before "
                            "any upstream call) in the last %.0f s were counted in the metrics "
                            "but not audited (the first of each key and code is; its next "
                            "record says how many it had left out)", self._left_out,
                            now - self._started)
            self._started, self._audited, self._left_out = now, set(), 0
        if key_id not in self._audited:
            self._audited.add(key_id)
            return self._pending.pop(key_id, 0)
        self._left_out += 1
        if key_id in self._pending or len(self._pending) < self.max_pending:
            self._pending[key_id] = self._pending.get(key_id, 0) + 1
        return None
