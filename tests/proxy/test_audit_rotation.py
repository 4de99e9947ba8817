"""The JSON Lines audit file is bounded (``proxy.audit_file``): rotated by size, the oldest
rotations deleted. Before the fix it was appended to for ever (the store's trail is trimmed and
the memory ring bounded, the file was not). No record is split or lost at a rotation, also with
several worker processes writing and rotating the same file at once."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from proxy.audit import EmbeddedAuditSink
from proxy.audit_file import RotatingFile
from proxy.record import Ledger
from proxy.settings import GatewayConfig

REPO = Path(__file__).resolve().parents[2]


def lines_of(path: Path) -> list[dict[str, object]]:
    """Every line of ``path`` parsed (a torn or merged line fails the test)."""
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_audit_file_is_rotated_by_size_and_keeps_only_its_rotations(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = EmbeddedAuditSink(path, keep=10, max_file_bytes=4096, rotated_files=2)
    ids = []
    for _ in range(200):  # about 80 KB of records
        ledger = Ledger("team-a")
        ids.append(ledger.request_id)
        record = ledger.close("200")
        assert record is not None
        sink.write(record)
    files = sorted(tmp_path.glob("audit.jsonl*"))
    assert files == [path, tmp_path / "audit.jsonl.1", tmp_path / "audit.jsonl.2"]
    assert all(0 < f.stat().st_size <= 4096 for f in files)
    kept = [r["request_id"] for f in reversed(files) for r in lines_of(f)]
    assert kept == ids[-len(kept):] and len(kept) > 2 * 4096 // 600  # the newest, in order


def test_a_record_larger_than_the_bound_is_written_whole_in_a_file_of_its_own(
        tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    rotating = RotatingFile(path, max_bytes=100, rotated_files=3)
    rotating.append(b'{"small":1}\n')
    rotating.append(b'{"big":"' + b"x" * 300 + b'"}\n')
    rotating.append(b'{"small":2}\n')
    assert [lines_of(p) for p in (path.with_name("audit.jsonl.2"), path.with_name(
        "audit.jsonl.1"), path)] == [[{"small": 1}], [{"big": "x" * 300}], [{"small": 2}]]


WRITER = """
import json, sys, time
from pathlib import Path
from proxy.audit_file import RotatingFile
path, go, worker, count = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
rotating = RotatingFile(path, max_bytes=8192, rotated_files=1000)
while not go.exists():
    time.sleep(0.001)
for n in range(count):
    pad = "y" * (n % 7 * 50)  # records of different sizes
    rotating.append((json.dumps({"worker": worker, "n": n, "pad": pad}) + "\\n").encode())
"""


@pytest.mark.slow  # spawns processes
def test_workers_writing_and_rotating_at_once_lose_and_split_no_record(tmp_path: Path) -> None:
    """Four processes append 400 records each to one file rotated every 8 KiB (about 36
    rotations, each racing the other writers); every record is found once, whole."""
    path, go = tmp_path / "audit.jsonl", tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    workers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(go), str(w), "400"],
                                env=env) for w in range(4)]
    time.sleep(0.5)  # every writer started and waiting
    go.touch()
    assert [w.wait(60) for w in workers] == [0, 0, 0, 0]
    files = list(tmp_path.glob("audit.jsonl*"))
    assert len(files) > 20 and all(f.stat().st_size <= 8192 for f in files)
    found = sorted((str(r["worker"]), int(str(r["n"]))) for f in files for r in lines_of(f))
    assert found == sorted((str(w), n) for w in range(4) for n in range(400))


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_path_that_is_not_a_regular_file_is_written_to_and_never_rotated() -> None:
    rotating = RotatingFile(Path("/dev/full"), max_bytes=4096, rotated_files=2)
    with pytest.raises(OSError, match="No space left"):
        rotating.append(b"{}\n")
    assert Path("/dev/full").is_char_device() and not Path("/dev/full.1").exists()


def test_the_file_is_bounded_by_default() -> None:
    models = [{"model_name": "stub", "litellm_params": {"model": "openai/stub"}}]
    audit = GatewayConfig.model_validate({"model_list": models,
                                          "audit": {"path": "audit.jsonl"}}).audit
    assert (audit.max_file_bytes, audit.rotated_files) == (100 * 1024 * 1024, 5)
    unbounded = GatewayConfig.model_validate({"model_list": models,
                                              "audit": {"max_file_bytes": None}}).audit
    assert unbounded.max_file_bytes is None


def test_the_audit_file_and_its_rotations_are_private_to_the_gateways_user(
        tmp_path: Path) -> None:
    """The file holds prompts and replies (the store's file is 0600) but was created 0644 by
    the start check and by the writer: readable by every user of the machine."""
    from proxy.start_checks import start_up_issues

    umask = os.umask(0o022)
    try:
        checked = tmp_path / "checked" / "audit.jsonl"
        config = GatewayConfig.model_validate({
            "model_list": [{"model_name": "m", "litellm_params": {"model": "openai/m"}}],
            "audit": {"path": str(checked)}})
        assert start_up_issues(config, "gateway.yaml") == []
        assert checked.stat().st_mode & 0o777 == 0o600
        path = tmp_path / "audit.jsonl"
        rotating = RotatingFile(path, max_bytes=100, rotated_files=2)
        for n in range(6):
            rotating.append(b'{"n":' + str(n).encode() + b',"pad":"' + b"x" * 60 + b'"}\n')
    finally:
        os.umask(umask)
    files = [path, path.with_name("audit.jsonl.1"), path.with_name("audit.jsonl.2")]
    assert [f.stat().st_mode & 0o777 for f in files] == [0o600] * 3


def test_an_audit_file_made_before_readable_by_others_is_made_private(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The gateway made a new file 0600, but one an older version (or logrotate's ``create
    0644``) had made kept its 0644: ``O_CREAT``'s mode applies only to a file it makes."""
    from proxy.start_checks import start_up_issues

    path = tmp_path / "audit.jsonl"
    older = [path, path.with_name("audit.jsonl.1"), path.with_name(".audit.jsonl.lock")]
    for made_before in older:
        made_before.write_bytes(b"")
        made_before.chmod(0o644)
    with caplog.at_level("WARNING", logger="proxy.audit_file"):
        rotating = RotatingFile(path, max_bytes=None, rotated_files=2)
        rotating.append(b'{"n":1}\n')
    assert [f.stat().st_mode & 0o777 for f in older] == [0o600] * 3
    assert len([r for r in caplog.records if "made 600" in r.getMessage()]) == 3
    path.chmod(0o640)  # the start check opens it too
    config = GatewayConfig.model_validate({
        "model_list": [{"model_name": "m", "litellm_params": {"model": "openai/m"}}],
        "audit": {"path": str(path)}})
    assert start_up_issues(config, "gateway.yaml") == []
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_bytes() == b'{"n":1}\n'


def test_an_audit_file_not_ours_to_make_private_is_written_with_one_warning(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A file the gateway may write but does not own (logrotate's ``create 0664 root adm``,
    the gateway in group ``adm``): its ``fchmod`` is refused (EPERM), which stopped start-up
    and made every record raise (counted as failed) although it was written."""
    from proxy.start_checks import start_up_issues

    def refused(fd: int, mode: int) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    path = tmp_path / "audit.jsonl"
    path.write_bytes(b"")
    path.chmod(0o664)
    monkeypatch.setattr(os, "fchmod", refused)  # as for a file of another user
    config = GatewayConfig.model_validate({
        "model_list": [{"model_name": "m", "litellm_params": {"model": "openai/m"}}],
        "audit": {"path": str(path)}})
    with caplog.at_level("WARNING", logger="proxy.audit_file"):
        assert start_up_issues(config, "gateway.yaml") == []
        rotating = RotatingFile(path, max_bytes=None, rotated_files=2)
        assert rotating.append(b'{"n":1}\n') and rotating.append(b'{"n":2}\n')
    assert path.read_bytes() == b'{"n":1}\n{"n":2}\n'
    warned = [r for r in caplog.records if "not this user's" in r.getMessage()]
    assert len(warned) == 1 and str(path) in warned[0].getMessage()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to write as another user")
def test_an_audit_file_of_another_user_is_written(tmp_path: Path) -> None:
    """As above, for real: a root-owned 0666 file written by the user ``nobody``."""
    folder = Path(tempfile.mkdtemp())  # pytest's tmp_path is not open to other users
    try:
        folder.chmod(0o777)
        path = folder / "audit.jsonl"
        path.write_bytes(b"")
        path.chmod(0o666)
        child = (
            "import os, sys\nfrom pathlib import Path\n"
            "from proxy.audit_file import RotatingFile\nfrom proxy.start_checks import _appendable\n"
            "os.setgid(65534); os.setuid(65534)  # imported first: root's Python may be closed\n"
            "print(_appendable(Path(sys.argv[1]), private=False))\n"
            "print(RotatingFile(Path(sys.argv[1]), None, 0).append(b'{}\\n'))\n")
        done = subprocess.run([sys.executable, "-c", child, str(path)], capture_output=True,
                              text=True, timeout=60, cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
        assert done.stdout.split() == ["None", "True"], done.stderr[-2000:]
        assert path.read_bytes() == b"{}\n" and path.stat().st_mode & 0o777 == 0o666
    finally:
        shutil.rmtree(folder)


@pytest.mark.parametrize("pipe", ["audit.jsonl.1", ".audit.jsonl.lock"])
def test_a_pipe_beside_the_audit_file_never_holds_its_writer(tmp_path: Path, pipe: str) -> None:
    """A rotation or lock file that is a pipe (a FIFO) was opened to read, which waits for a
    writer to open it: making the file's writer never returned."""
    path = tmp_path / "audit.jsonl"
    os.mkfifo(tmp_path / pipe)
    results: list[object] = []

    def write() -> None:
        rotating = RotatingFile(path, max_bytes=100, rotated_files=2)
        try:
            results.append(rotating.append(b'{"n":1}\n'))
        except OSError as error:  # the lock file is not one: the record still goes in
            results.append(error)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    writer.join(5)
    if writer.is_alive():  # before the fix: release the reader that waits for a writer
        os.close(os.open(tmp_path / pipe, os.O_WRONLY | os.O_NONBLOCK))
        writer.join(5)
        pytest.fail("the writer waited on the pipe")
    assert path.read_bytes() == b'{"n":1}\n'
    if pipe.endswith(".lock"):  # not a lock: the record goes in, the failure is counted
        assert len(results) == 1 and isinstance(results[0], OSError)
    else:
        assert results == [True]
