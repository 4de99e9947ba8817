"""A policy file added (or changed) while the gateway is idle is served on the first request
naming it: before the fix, the pass that first saw it only noted its stamp (settle time was
measured between passes, not from the file's last change), so that request got 400
``policy_not_found`` however long the file had been there. A file changed just now still waits
for a second pass (it may be half-written)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from vilmo.policy_store import MIN_QUIET_S, PolicyStore, UnknownPolicy

DEFAULT = "name: default\nvalues: {mft.care: {threshold: 0.4, action: block}}\n"
LATE = "name: late\nvalues: {mft.care: {threshold: 0.4, action: annotate}}\n"


def store_seen_from(tmp_path: Path, ahead_s: float, settle_s: float = 0.0) -> PolicyStore:
    """A started store whose wall clock runs ``ahead_s`` past the files' stamps (as if that
    long had passed since they were written)."""
    (tmp_path / "default.yaml").write_text(DEFAULT)
    return PolicyStore(tmp_path, "default", reload_interval=0, settle_s=settle_s,
                       wall_clock=lambda: time.time_ns() + int(ahead_s * 1e9))


def test_a_file_added_while_idle_is_served_on_first_sight(tmp_path: Path) -> None:
    store = store_seen_from(tmp_path, ahead_s=5.0)
    (tmp_path / "late.yaml").write_text(LATE)
    assert store.get("late").name == "late"


def test_a_file_changed_while_idle_is_served_on_first_sight(tmp_path: Path) -> None:
    store = store_seen_from(tmp_path, ahead_s=5.0)
    (tmp_path / "default.yaml").write_text(DEFAULT.replace("block", "annotate"))
    assert store.get().values["mft.care"].action == "annotate"


@pytest.mark.parametrize(("ahead_s", "settle_s"), [(0.0, 0.0), (MIN_QUIET_S / 2, 0.0),
                                                   (5.0, 10.0)])
def test_a_file_changed_just_now_still_waits_for_a_second_pass(
        tmp_path: Path, ahead_s: float, settle_s: float) -> None:
    store = store_seen_from(tmp_path, ahead_s, settle_s)
    (tmp_path / "late.yaml").write_text(LATE)
    with pytest.raises(UnknownPolicy):
        store.get("late")
    if settle_s == 0.0:
        assert store.get("late").name == "late"  # unchanged on the next pass
