"""Sliding-window arithmetic shared by both backends (the Redis Lua script mirrors it).

Usage is counted in one-second buckets over the last ``WINDOW_S`` seconds: exact to a second,
at most 60 buckets per key and kind, and no burst of twice the limit at a window edge as fixed
per-minute windows allow.
"""

from __future__ import annotations

from collections.abc import Iterable

WINDOW_S = 60


def oldest_second(now: int) -> int:
    """The first second still inside the window that ends at ``now``."""
    return now - WINDOW_S + 1


def retry_after(buckets: Iterable[tuple[int, int]], used: int, limit: int, now: int) -> int:
    """Seconds until the usage in the window falls below ``limit`` (room for one more).

    ``buckets`` are ``(second, amount)`` inside the window, oldest first; a bucket leaves the
    window ``WINDOW_S`` seconds after its second.
    """
    for second, amount in buckets:
        used -= amount
        if used < limit:
            return max(1, second + WINDOW_S - now)
    return WINDOW_S


def reservation(used: int, limit: int, least: int, most: int) -> int | None:
    """The tokens to reserve for a request with ``used`` in the window: ``most`` when the
    window has room for it, else what is left, never below ``least``; None when not even
    ``least`` fits (refused: ``retry_after(buckets, used, limit - least + 1, now)`` says when
    it will)."""
    if used + least > limit:
        return None
    return max(least, min(most, limit - used))
