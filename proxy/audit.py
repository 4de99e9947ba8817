"""The audit trail: one record per chat request, written to an ``AuditSink``.

The embedded sink keeps recent records in memory and, when configured, appends every record to
a JSON Lines file. The store's audit trail (SQLite or a Redis Stream, queryable through the admin
API) is written beside it by ``Services.finish`` (``proxy.trail`` makes its records).
"""

from __future__ import annotations

import json
import threading
from collections import deque
from pathlib import Path
from typing import Protocol

from proxy.record import RequestRecord


class AuditSink(Protocol):
    """Where audit records go (``proxy.record`` builds them)."""

    def write(self, record: RequestRecord) -> None: ...


class EmbeddedAuditSink:
    """Recent records in memory; every record appended to a JSON Lines file if a path is set."""

    def __init__(self, path: Path | None = None, keep: int = 1000) -> None:
        self.recent: deque[RequestRecord] = deque(maxlen=keep)
        self.path = path
        self._lock = threading.Lock()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: RequestRecord) -> None:
        self.recent.append(record)
        if self.path is not None:
            line = json.dumps(record.to_json(), separators=(",", ":")) + "\n"
            with self._lock, self.path.open("a", encoding="utf-8") as out:
                out.write(line)
