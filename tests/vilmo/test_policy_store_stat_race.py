"""A file first seen mid-write is not loaded half-written. The first-sight rule judged a file's
age by the wall clock when its turn came in a pass, against a stamp taken at the pass's start:
behind a slow load (another file's check), a file written just before the pass read as old and
was loaded on first sight; and a file that changed between its stat and its read was read as
it was then (half-written) under the older stamp. Its age is now read with its stat, and it is
stat'ed again just before it is read (changed: noted, loaded on a later pass)."""

from __future__ import annotations

import time
from pathlib import Path

from vilmo.policy import Policy
from vilmo.policy_store import PolicyStore

DEFAULT = "name: default\nvalues: {mft.care: {threshold: 0.4, action: block}}\n"
A = "name: a\nvalues: {mft.care: {threshold: 0.4, action: block}}\n"
B_OLD = "name: b\nvalues: {mft.care: {threshold: 0.3, action: annotate}}\n"
B_FULL = ("name: b\nvalues:\n  mft.care: {threshold: 0.4, action: annotate}\n"
          "  mft.fairness: {threshold: 0.4, action: block}\n")
B_HALF = B_FULL.split("  mft.fairness")[0]  # a valid policy: what a reader mid-write sees


class SlowLoads:
    """A store whose wall clock jumps ``slow_s`` while policy ``a`` is checked (a slow load),
    and which can run ``during`` (a writer) at that moment."""

    def __init__(self, directory: Path, slow_s: float = 10.0) -> None:
        self.offset_ns = 0
        self.slow_s = slow_s
        self.during: list[str] = []
        self.directory = directory
        self.store = PolicyStore(directory, "default", reload_interval=0, settle_s=0.0,
                                 check=self.check, wall_clock=self.wall_clock)

    def wall_clock(self) -> int:
        return time.time_ns() + self.offset_ns

    def check(self, policy: Policy) -> None:
        if policy.name == "a":
            self.offset_ns += int(self.slow_s * 1e9)
            for text in self.during:
                (self.directory / "b.yaml").write_text(text)


def test_a_file_written_just_before_a_slow_pass_is_not_taken_as_settled(
        tmp_path: Path) -> None:
    (tmp_path / "default.yaml").write_text(DEFAULT)
    slow = SlowLoads(tmp_path)
    (tmp_path / "a.yaml").write_text(A)
    slow.store.refresh(force=True)  # a noted (written just now)
    (tmp_path / "b.yaml").write_text(B_HALF)  # first seen by the next pass, maybe mid-write
    slow.store.refresh(force=True)  # a loads, slowly; b's turn comes 10 s later
    assert "a" in slow.store.loaded_policies()
    assert "b" not in slow.store.loaded_policies()  # was loaded as it stood (half-written)
    slow.store.refresh(force=True)
    assert "b" in slow.store.loaded_policies()  # unchanged since: settled


def test_a_file_changed_between_its_stat_and_its_read_is_not_read_then(tmp_path: Path) -> None:
    (tmp_path / "default.yaml").write_text(DEFAULT)
    (tmp_path / "b.yaml").write_text(B_OLD)
    slow = SlowLoads(tmp_path)
    (tmp_path / "a.yaml").write_text(A)
    (tmp_path / "b.yaml").write_text(B_FULL.replace("0.4", "0.5"))
    slow.offset_ns = int(100e9)  # both changes long settled when the pass stats them
    slow.during = [B_HALF]  # while a loads, b is rewritten in place: half of it so far
    slow.store.refresh(force=True)
    assert "a" in slow.store.loaded_policies()
    served = slow.store.loaded_policies()["b"]  # its last good version, not the half
    assert set(served.values) == {"mft.care"} and served.values["mft.care"].threshold == 0.3
    slow.during = []
    (tmp_path / "b.yaml").write_text(B_FULL)
    slow.offset_ns += int(100e9)
    slow.store.refresh(force=True)
    assert set(slow.store.loaded_policies()["b"].values) == {"mft.care", "mft.fairness"}


def test_a_file_changed_between_its_stat_and_its_read_still_waits_settle_s(
        tmp_path: Path) -> None:
    """review mr9: noted as pending with the pass's start time, a file changed behind a slow
    load counted as seen ``settle_s`` ago on the very next pass, and was loaded mid-write."""
    monotonic, wall_offset = [0.0], [0]

    def check(policy: Policy) -> None:
        if policy.name == "a":  # a slow load (10 s) while b is rewritten in place
            monotonic[0] += 10.0
            wall_offset[0] = 0
            (tmp_path / "b.yaml").write_text(B_HALF)

    (tmp_path / "default.yaml").write_text(DEFAULT)
    (tmp_path / "b.yaml").write_text(B_OLD)
    store = PolicyStore(tmp_path, "default", reload_interval=0, settle_s=5.0, check=check,
                        clock=lambda: monotonic[0],
                        wall_clock=lambda: time.time_ns() + wall_offset[0])
    store.refresh(force=True)  # start-up: default and b as they are
    (tmp_path / "a.yaml").write_text(A)
    (tmp_path / "b.yaml").write_text(B_FULL)
    wall_offset[0] = int(100e9)  # both changes long settled when the pass stats them
    store.refresh(force=True)  # a loads for 10 s; b, re-stat'ed, changed: pending
    monotonic[0] += 0.1  # 0.1 s after b's new stamp was first seen
    store.refresh(force=True)
    served = store.loaded_policies()["b"]
    assert served.values["mft.care"].threshold == 0.3  # the last good one, not the half
