"""An audit path that is a pipe (``/dev/stdout`` under a container runtime, a FIFO) never
blocks the caller: its writes wait on the pipe's reader, so only the backlog thread makes them.

Review of fx-known2: a pipe took no lock, so ``EmbeddedAuditSink.write`` (on the event loop)
opened and wrote it in place: a stalled log reader held the loop 2.8 s, an absent one for ever.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from proxy.audit import EmbeddedAuditSink


class Record:
    """What the sink needs of a record."""

    def __init__(self, index: int) -> None:
        self.index = index

    def to_json(self) -> dict[str, object]:
        return {"index": self.index, "prompt": "x" * 20_000}


def test_writes_to_a_pipe_with_no_reader_return_and_arrive_once_one_comes(
        tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    os.mkfifo(path)
    sink = EmbeddedAuditSink(path)
    def write_all() -> None:
        for index in range(10):
            sink.write(Record(index))  # type: ignore[arg-type]

    writer = threading.Thread(target=write_all, daemon=True)
    writer.start()
    writer.join(5)
    assert not writer.is_alive()  # before: blocked in open() until a reader came
    received, deadline = b"", time.monotonic() + 10
    with open(path, "rb", buffering=0) as reader:  # a reader comes: the backlog thread writes
        while received.count(b"\n") < 10 and time.monotonic() < deadline:
            chunk = reader.read(65536)  # b"" between two records' opens of the pipe
            received += chunk
            if not chunk:
                time.sleep(0.01)
    assert sink.close() == 0
    assert [json.loads(line)["index"] for line in received.splitlines()] == list(range(10))


WRITER = """
import json, sys
from pathlib import Path
from proxy.audit_file import RotatingFile
audit = RotatingFile(Path(sys.argv[1]), None, 2)
for i in range(20):
    audit.append(json.dumps({"w": sys.argv[2], "i": i, "prompt": sys.argv[2] * 50_000}).encode()
                 + b"\\n")
"""


def test_two_workers_writing_one_pipe_never_interleave_their_records(tmp_path: Path) -> None:
    """Final review: a pipe took no lock, so two workers' records over PIPE_BUF (4 KiB), each
    written in pieces, interleaved (30 of 40 lines of 100 KB unreadable); writers now take
    turns on the pipe itself."""
    path = tmp_path / "audit.jsonl"
    os.mkfifo(path)
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    held = os.open(path, os.O_WRONLY)  # the reader sees its end only once this is closed
    os.set_blocking(reader, True)
    repo = Path(__file__).resolve().parents[2]
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), tag], cwd=repo,
                                env={**os.environ, "PYTHONPATH": str(repo)})
               for tag in "AB"]
    received: list[bytes] = []

    def read_all() -> None:
        while chunk := os.read(reader, 1 << 16):
            received.append(chunk)

    draining = threading.Thread(target=read_all, daemon=True)
    draining.start()
    try:
        assert [w.wait(60) for w in writers] == [0, 0]
    finally:
        os.close(held)
    draining.join(30)
    os.close(reader)
    lines = b"".join(received).splitlines()
    records = [json.loads(line) for line in lines]  # before: JSONDecodeError
    assert sorted((r["w"], r["i"]) for r in records) == [(w, i) for w in "AB" for i in range(20)]
