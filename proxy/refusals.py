"""Which chat requests refused for want of a valid key get an audit record. Anyone can send
them, and each record is a durable write to the store and a JSON Lines line, so they are
bounded: the first refusal from each client address in each interval is recorded, from at most
``max_addresses`` addresses per interval; every other one is counted in the metrics only
(``vilmo_requests_total{status="401"}``), and one log line per interval says how many were left
out of the audit trail.
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
