"""An audit path that is a pipe (``/dev/stdout`` under a container runtime, a FIFO) never
blocks the caller: its writes wait on the pipe's reader, so only the backlog thread makes them.

Review of fx-known2: a pipe took no lock, so ``EmbeddedAuditSink.write`` (on the event loop)
opened and wrote it in place: a stalled log reader held the loop 2.8 s, an absent one for ever.
"""

from __future__ import annotations

import json
import os
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
