"""The JSON Lines audit file is bounded (``proxy.audit_file``): rotated by size, the oldest
rotations deleted. Before the fix it was appended to for ever (the store's trail is trimmed and
the memory ring bounded, the file was not). No record is split or lost at a rotation, also with
several worker processes writing and rotating the same file at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
