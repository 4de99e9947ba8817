"""A record's ``duration_s`` is measured on a monotonic clock (``proxy.record.Ledger``).

Review r3: ``build_record`` took ``time.time() - started_at``: a wall clock stepped while a
request ran (NTP, a VM resumed) made its duration negative or hours long. ``started_at``
stays the wall-clock instant the record's time fields show.
"""

from __future__ import annotations

import time

import pytest

import proxy.record
from proxy.record import Ledger


class SteppedClock:
    """``time`` with its wall clock stepped back an hour after the request started."""

    def __init__(self) -> None:
        self.step = 0.0

    def time(self) -> float:
        return time.time() + self.step

    def monotonic(self) -> float:
        return time.monotonic()


def test_a_wall_clock_stepped_back_leaves_the_duration_alone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = SteppedClock()
    monkeypatch.setattr(proxy.record, "time", clock)
    before = time.time()
    ledger = Ledger("team")
    clock.step = -3600.0
    record = ledger.close("200")
    assert record is not None
    assert 0.0 <= record.duration_s < 60.0
    assert abs(record.started_at - before) < 60.0  # the wall-clock start, as before
