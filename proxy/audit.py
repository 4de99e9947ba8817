"""The audit trail: one record per chat request, written to an ``AuditSink``.

The embedded sink keeps recent records in memory and, when configured, appends every record to
a JSON Lines file. A Redis Streams sink drops in behind the same one-method protocol.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from vilmo.instructions import message_text
from vilmo.verdict import Verdict


@dataclass(slots=True)
class RequestRecord:
    """What happened to one request, filled in step by step by the pipeline."""

    request_id: str
    caller: str
    model: str = ""
    stream: bool = False
    policy: str = ""
    generator: str = ""
    principles: tuple[str, ...] = ()
    stakes: tuple[str, ...] = ()
    """Values the instruction step judged at stake (stake-aware generators)."""
    status: str = "ok"
    error_code: str | None = None
    started_at: float = field(default_factory=time.time)
    instruction_s: float = 0.0
    duration_s: float = 0.0
    verdict: dict[str, object] | None = None
    attempts: list[dict[str, object]] = field(default_factory=list)
    """Verdicts of replies that were regenerated, in order."""
    prompt: list[dict[str, str]] = field(default_factory=list)
    """The client's messages (role, text), without vilmo's instruction."""
    replies: list[dict[str, object]] = field(default_factory=list)
    """Every checked reply, ``{"text", "values"}``, in order: the last is the one sent (or
    refused), the earlier ones were regenerated away."""
    tokens: int = 0
    """Tokens the upstream reported (``usage.total_tokens``), over every call."""

    @property
    def written(self) -> bool:
        """Has the request's outcome been recorded (status set from "ok")?"""
        return self.status != "ok"


def note_prompt(record: RequestRecord, messages: list[dict[str, Any]]) -> None:
    """Keep the client's turns for the audit trail (text only; redacted and cut when stored)."""
    record.prompt = [{"role": str(m.get("role", "")), "content": message_text(m)}
                     for m in messages if isinstance(m, dict)]


def note_reply(record: RequestRecord, texts: dict[int, str], verdict: Verdict | None,
               usage: object = None) -> None:
    """Keep a checked reply (the first choice's text) and the upstream's token count."""
    if texts:
        first = texts[min(texts)]
        values = list(verdict.violation_ids) if verdict is not None else []
        record.replies.append({"text": first, "values": values})
    if isinstance(usage, dict) and isinstance(usage.get("total_tokens"), int):
        record.tokens += max(0, usage["total_tokens"])


def new_request_id() -> str:
    return f"req-{uuid.uuid4().hex[:16]}"


class AuditSink(Protocol):
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
            line = json.dumps(asdict(record), separators=(",", ":")) + "\n"
            with self._lock, self.path.open("a", encoding="utf-8") as out:
                out.write(line)
