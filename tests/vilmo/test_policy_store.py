"""The policy store under files that break in any way, and files that claim a served name."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import pytest

from vilmo.policy import Policy, PolicyError, load_policy
from vilmo.policy_store import SHIPPED_POLICY_DIR, PolicyStore, UnknownPolicy

DEFAULT = "name: default\nvalues: {mft.care: {threshold: 0.4, action: block}}\n"
DEEP = "name: deep\nvalues: {mft.care: {}}\ndescription: " + "[" * 3000 + "]" * 3000 + "\n"


def write(path: Path, text: str, mtime_s: int | None = None) -> Path:
    path.write_text(text)
    if mtime_s is not None:  # a distinct mtime even on coarse clocks
        os.utime(path, ns=(1, mtime_s * 10**9))
    return path


class ExplodingCheck:
    """A check (the gateway loads generator weights here) that fails as a corrupt npz does."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, policy: Policy) -> None:
        self.calls.append(policy.name)
        if policy.name == "heavy":
            raise IndexError("too many indices for array")


def test_a_file_nested_too_deeply_breaks_only_itself(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    write(tmp_path / "default.yaml", DEFAULT, 1000)
    store = PolicyStore(tmp_path, "default", reload_interval=0)
    with caplog.at_level(logging.ERROR):
        write(tmp_path / "a-deep.yaml", DEEP)
        write(tmp_path / "default.yaml", DEFAULT.replace("block", "annotate"), 2000)
        store.refresh()  # the first pass that sees a change only notes it
        assert store.get().values["mft.care"].action == "annotate"  # sorted after: reloaded
        assert store.names() == ["default"]
    broken = [r for r in caplog.records if "a-deep.yaml" in r.getMessage()]
    assert len(broken) == 1 and "nested deeper than" in broken[0].getMessage()
    assert "\n" not in broken[0].getMessage()


def test_a_failing_check_of_any_kind_breaks_only_its_file(tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """At start-up and on reload: the file is skipped with an error naming it, the others are
    served, and the failing file is not read again until it changes."""
    write(tmp_path / "default.yaml", DEFAULT)
    heavy = write(tmp_path / "heavy.yaml", "name: heavy\nvalues: {mft.care: {}}\n")
    check = ExplodingCheck()
    with caplog.at_level(logging.ERROR):
        store = PolicyStore(tmp_path, "default", reload_interval=0, check=check)
    assert store.names() == ["default"]
    assert f"policy file {heavy} is broken" in caplog.text and "IndexError" in caplog.text
    calls = len(check.calls)
    assert store.get().name == "default" and store.get().name == "default"
    assert len(check.calls) == calls  # not retried while unchanged
    write(heavy, "name: heavy\nvalues: {mft.fairness: {}}\n", 3000)
    store.refresh()
    assert store.get().name == "default"
    assert check.calls[calls:] == ["heavy"]


def test_a_broken_default_still_stops_start_up(tmp_path: Path) -> None:
    """A gateway without its default policy serves no caller without a policy: start-up fails
    as it does for a missing default, and names the broken file."""
    write(tmp_path / "default.yaml", DEEP.replace("name: deep", "name: default"))
    with pytest.raises(UnknownPolicy, match="default.yaml"):
        PolicyStore(tmp_path, "default", reload_interval=0)


def test_a_new_file_cannot_take_over_a_served_name(tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """`cp default.yaml default-draft.yaml` (sorted first) leaves `default` with default.yaml,
    and the log names the newcomer as ignored."""
    write(tmp_path / "default.yaml", DEFAULT, 1000)
    store = PolicyStore(tmp_path, "default", reload_interval=0)
    draft = tmp_path / "default-draft.yaml"
    with caplog.at_level(logging.ERROR):
        write(draft, DEFAULT.replace("block", "allow"), 2000)
        store.refresh()
        assert store.get().values["mft.care"].action == "block"
    assert f"policy file {draft} also names policy 'default'" in caplog.text
    assert str(tmp_path / "default.yaml") not in caplog.text.split("also names")[0]

    caplog.clear()
    with caplog.at_level(logging.ERROR):  # other changes do not repeat the message
        write(tmp_path / "other.yaml", DEFAULT.replace("default", "other"))
        store.refresh()
        assert store.names() == ["default", "other"]
    assert "also names" not in caplog.text
    with caplog.at_level(logging.ERROR):  # but editing the ignored file does
        write(draft, DEFAULT.replace("block", "annotate"), 2500)
        store.refresh()
        assert store.get().values["mft.care"].action == "block"
    assert f"policy file {draft} also names policy 'default'" in caplog.text

    write(tmp_path / "default.yaml", DEFAULT.replace("0.4", "0.6"), 3000)  # its own edits apply
    store.refresh()
    assert store.get().values["mft.care"].threshold == 0.6
    (tmp_path / "default.yaml").unlink()  # gone: the remaining file takes the name
    assert store.get().values["mft.care"].action == "annotate"


def test_the_file_named_after_a_policy_takes_it_back_when_it_returns(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """default.yaml absent during one reload (an editor's save-by-rename, rsync) lets the draft
    that also says ``name: default`` serve it for that while, not for good: once default.yaml
    is back its edits are served, as a replica that did not reload meanwhile (or a restart)
    serves them."""
    default = write(tmp_path / "default.yaml", DEFAULT, 1000)
    write(tmp_path / "default-draft.yaml", DEFAULT.replace("block", "allow"), 1000)
    store = PolicyStore(tmp_path, "default", reload_interval=0)
    saved = tmp_path / "default.yaml.swp"
    default.rename(saved)
    assert store.get().values["mft.care"].action == "allow"  # the only claim left
    saved.rename(default)
    write(default, DEFAULT.replace("block", "annotate"), 2000)
    store.refresh()
    with caplog.at_level(logging.WARNING):
        assert store.get().values["mft.care"].action == "annotate"
    assert f"policy 'default' is now served from {default}" in caplog.text
    other = PolicyStore(tmp_path, "default", reload_interval=0)
    assert other.get().values["mft.care"].action == "annotate"


def test_start_up_gives_a_shared_name_to_the_file_named_after_it(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write(tmp_path / "default.yaml", DEFAULT)
    draft = write(tmp_path / "default-draft.yaml", DEFAULT.replace("block", "allow"))
    with caplog.at_level(logging.ERROR):
        store = PolicyStore(tmp_path, "default", reload_interval=0)
    assert store.get().values["mft.care"].action == "block"
    assert f"policy file {draft} also names policy 'default'" in caplog.text
    write(tmp_path / "b.yaml", "name: shared\nvalues: {mft.care: {}}\n")
    write(tmp_path / "a.yaml", "name: shared\nvalues: {mft.fairness: {}}\n")
    assert set(PolicyStore(tmp_path, "default", 0).get("shared").values) == {"mft.fairness"}


def test_store_errors_are_policy_errors_for_broken_yaml(tmp_path: Path) -> None:
    """The loader's own failures (RecursionError, UnicodeDecodeError) are located issues."""
    from vilmo.policy import load_policy

    for name, data in (("deep.yaml", DEEP.encode()), ("latin1.yaml", b"name: caf\xe9\n")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(PolicyError) as caught:
            load_policy(tmp_path / name)
        assert caught.value.issues[0].file == str(tmp_path / name)


def test_a_half_written_file_is_not_served(tmp_path: Path) -> None:
    """An in-place save (truncate, then write in pieces) seen mid-write: the prefix is a valid
    policy without the block rules. The pass that sees it only notes its stamp; the last good
    version is served until a later pass finds the file unchanged."""
    full = (SHIPPED_POLICY_DIR / "default.yaml").read_text()
    path = write(tmp_path / "default.yaml", full, 1000)
    store = PolicyStore(tmp_path, "default", reload_interval=0)
    blocks = sorted(v for v, r in store.get().values.items() if r.action == "block")
    assert blocks
    cut = full.index("  safety.violence:")
    write(path, full[:cut], 2000)  # the first piece, a valid policy on its own
    assert sorted(v for v, r in store.get().values.items() if r.action == "block") == blocks
    write(path, full.replace("threshold: 0.5", "threshold: 0.55", 1), 3000)  # the rest
    assert sorted(v for v, r in store.get().values.items() if r.action == "block") == blocks
    assert store.get().values == load_policy(path).values  # unchanged since: loaded


def test_a_change_waits_out_the_settle_time(tmp_path: Path) -> None:
    now = [0.0]
    path = write(tmp_path / "default.yaml", DEFAULT, 1000)
    store = PolicyStore(tmp_path, "default", reload_interval=0, settle_s=2.0,
                        clock=lambda: now[0])
    write(path, DEFAULT.replace("block", "annotate"), 2000)
    for t in (0.0, 1.0, 1.9):  # seen unchanged, but not for long enough
        now[0] = t
        assert store.get().values["mft.care"].action == "block"
    now[0] = 2.0
    assert store.get().values["mft.care"].action == "annotate"


def _replace_keeping_stamp(path: Path, text: str, in_place: bool) -> None:
    """A same-size replacement that keeps the old mtime, as ``cp -p`` (in place) or
    ``rsync -t`` / ``tar -x`` (a new file renamed over the old) leave it."""
    before = path.stat()
    assert len(text.encode()) == before.st_size
    while True:  # the ctime clock is coarse: a write in the same tick keeps the old ctime
        if in_place:
            path.write_text(text)
        else:
            temporary = path.with_suffix(".tmp")
            temporary.write_text(text)
            os.utime(temporary, ns=(before.st_atime_ns, before.st_mtime_ns))
            temporary.replace(path)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        after = path.stat()
        if after.st_ctime_ns != before.st_ctime_ns or after.st_ino != before.st_ino:
            break
    assert (after.st_mtime_ns, after.st_size) == (before.st_mtime_ns, before.st_size)


@pytest.mark.parametrize("in_place", [True, False], ids=["cp-p", "rsync-t"])
def test_a_same_size_replacement_keeping_the_mtime_is_reloaded(tmp_path: Path,
                                                               in_place: bool) -> None:
    """An operator tightening a policy with ``cp -p`` must not keep the old one in service."""
    path = write(tmp_path / "default.yaml", DEFAULT.replace("block", "allow"), 1000)
    store = PolicyStore(tmp_path, "default", reload_interval=0)
    assert store.get().values["mft.care"].action == "allow"
    _replace_keeping_stamp(path, DEFAULT, in_place)
    store.get()  # the first pass notes the new stamp; the next loads it
    assert store.get().values["mft.care"].action == "block"


def test_an_older_pass_never_replaces_a_newer_one(tmp_path: Path) -> None:
    """``abandon_pass`` swapped the pass lock, and a thread already waiting on the old one
    ran a pass alongside passes on the new one; the one that began first committed last,
    bringing back a policy whose file had been removed. Now a waiter on a replaced lock waits
    on the new one, and a pass's read of a file is dropped when a later pass committed it."""
    for name in ("default", "a", "c"):
        write(tmp_path / f"{name}.yaml", DEFAULT.replace("default", name, 1))
    hung, slow, armed, entered = (threading.Event() for _ in range(4))
    calls: list[str] = []

    def check(policy: Policy) -> None:
        if armed.is_set() and policy.name == "a":
            calls.append(threading.current_thread().name)
            entered.set()
            if len(calls) <= 2:  # the first pass hangs; the old lock's waiter is slow
                (hung if len(calls) == 1 else slow).wait(10)

    store = PolicyStore(tmp_path, "default", reload_interval=0, check=check)
    write(tmp_path / "a.yaml", DEFAULT.replace("default", "a", 1) + "# edited\n")
    store.refresh()  # a.yaml's new stamp noted
    armed.set()
    first = threading.Thread(target=store.refresh, name="first")  # hangs on a.yaml
    first.start()
    assert entered.wait(10)
    waiter = threading.Thread(target=store.refresh, name="waiter")  # waits on its lock
    waiter.start()
    time.sleep(0.2)
    assert store.abandon_pass()
    hung.set()
    first.join(10)
    time.sleep(0.2)
    (tmp_path / "c.yaml").unlink()
    newer = threading.Thread(target=store.refresh, name="newer")
    newer.start()
    newer.join(3)
    slow.set()
    for thread in (waiter, newer):
        thread.join(10)
    assert store.loaded_names() == ["a", "default"]


def test_a_file_removed_while_an_abandoned_pass_reads_it_is_not_served(tmp_path: Path) -> None:
    """Final review: a pass abandoned while it loaded a new file committed that read after a
    later pass had seen the file removed (that pass left no entry to compare), so the removed
    policy was served again until the next pass. A read whose file is gone is dropped."""
    write(tmp_path / "default.yaml", DEFAULT)
    entered, release = threading.Event(), threading.Event()

    def check(policy: Policy) -> None:
        if policy.name == "extra" and not release.is_set():
            entered.set()
            release.wait(10)  # a slow load (its weights on a slow mount)

    store = PolicyStore(tmp_path, "default", reload_interval=0, check=check)
    write(tmp_path / "extra.yaml", DEFAULT.replace("default", "extra", 1))
    store.refresh(force=True)  # the new file noted; it loads on the next pass
    slow = threading.Thread(target=store.refresh, kwargs={"force": True})
    slow.start()
    try:
        assert entered.wait(10)
        assert store.abandon_pass()
        (tmp_path / "extra.yaml").unlink()
        store.refresh(force=True)  # a later pass: the file is gone
        assert store.loaded_names() == ["default"]
    finally:
        release.set()
        slow.join(10)
    assert store.loaded_names() == ["default"]  # before: ['default', 'extra']
