"""A record whose write fails part-way (disk full, ``EFBIG``) leaves no torn line that the next
record is glued onto (``proxy.audit_file.RotatingFile``).

Review r3 (t13): with the file limited to 4 KiB (``RLIMIT_FSIZE``), record 2 was written in
part and failed (counted); record 3 was appended to its torn line, so a JSON Lines reader lost
both, though record 3 was reported written. Now a writer holding the lock cuts the file back
to its size before the write; a pipe, or a file written without the lock, gets the next
record on a line of its own.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import proxy.audit_file
from proxy.audit_file import RotatingFile


def record(index: int) -> bytes:
    return (json.dumps({"request_id": f"req-{index}", "pad": "x" * 3000}) + "\n").encode()


def readable(data: bytes) -> list[str]:
    """The request ids of the lines a JSON Lines reader can parse."""
    found = []
    for line in data.splitlines():
        try:
            found.append(json.loads(line)["request_id"])
        except ValueError:
            pass
    return found


def disk_fills_after(monkeypatch: pytest.MonkeyPatch, room: int) -> None:
    """The next record's write takes ``room`` bytes, then fails with ENOSPC."""
    def write_all(fd: int, data: bytes) -> None:
        os.write(fd, data[:room])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(proxy.audit_file, "_write_all", write_all)


def test_a_write_that_fails_part_way_is_cut_off_again(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "audit.jsonl"
    audit = RotatingFile(path, None, 5)
    audit.append(record(1))
    before = path.read_bytes()
    disk_fills_after(monkeypatch, 1000)
    with pytest.raises(OSError):
        audit.append(record(2))
    assert path.read_bytes() == before
    monkeypatch.undo()
    audit.append(record(3))
    assert readable(path.read_bytes()) == ["req-1", "req-3"]
    assert path.read_bytes().endswith(b"\n")


def test_a_torn_line_left_by_another_writer_is_not_continued(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(record(1) + record(2)[:1000])  # a writer killed part-way, or an old one
    path.chmod(0o600)
    RotatingFile(path, None, 5).append(record(3))
    assert readable(path.read_bytes()) == ["req-1", "req-3"]


def test_a_pipe_s_next_record_starts_a_line_of_its_own(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "audit.fifo"
    os.mkfifo(path)
    received: list[bytes] = []

    def read() -> None:
        with open(path, "rb") as reader:
            received.append(reader.read())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    holder = os.open(path, os.O_WRONLY)  # keeps the reader's end open across the records
    try:
        audit = RotatingFile(path, None, 5)
        audit.append(record(1))
        disk_fills_after(monkeypatch, 1000)
        with pytest.raises(OSError):
            audit.append(record(2))
        monkeypatch.undo()
        audit.append(record(3))
    finally:
        os.close(holder)
    reader.join(10)
    assert readable(received[0]) == ["req-1", "req-3"]


def test_a_file_size_limit_leaves_whole_lines(tmp_path: Path) -> None:
    """The review's case, with the file really limited (``RLIMIT_FSIZE``) in a child process."""
    script = f"""
import json, resource, signal, sys
from pathlib import Path
from proxy.audit_file import RotatingFile
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
audit = RotatingFile(Path({str(tmp_path / "audit.jsonl")!r}), None, 5)
record = lambda i: (json.dumps({{"request_id": f"req-{{i}}", "pad": "x" * 3000}}) + "\\n").encode()
audit.append(record(1))
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
try:
    audit.append(record(2))
    sys.exit("record 2 was written")
except OSError:
    pass
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
audit.append(record(3))
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60,
                   env={**os.environ, "PYTHONPATH": str(Path(proxy.audit_file.__file__).parents[1])})
    assert readable((tmp_path / "audit.jsonl").read_bytes()) == ["req-1", "req-3"]
