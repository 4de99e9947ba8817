"""The one adapter from the gateway's ``RequestRecord`` to the store's ``AuditRecord``.

Texts (the prompt, the reply, the replies regenerated away, error messages) are redacted with
the gateway's ``Redactor`` first and cut to ``MAX_TEXT_CHARS`` after, so a secret across the cut
never survives in part and one huge prompt cannot bloat the trail. The named fields are the ones
``GET /admin/audit`` filters by; the rest goes to ``data`` (``proxy.store.negatives`` reads
``prompt``, ``reply`` and ``rejected`` from there).
"""

from __future__ import annotations

from typing import Any

from proxy.audit import RequestRecord
from proxy.errors import Redactor
from proxy.store import AuditRecord

MAX_TEXT_CHARS = 4000
"""Per text (each message, each reply)."""
MAX_MESSAGES = 50
"""The last turns of a prompt that are kept."""


def audit_record(record: RequestRecord, redact: Redactor,
                 max_chars: int = MAX_TEXT_CHARS) -> AuditRecord:
    """The store's record of one request, its texts redacted then cut."""
    verdict: dict[str, Any] = dict(record.verdict or {})
    output: dict[str, Any] = verdict if "action" in verdict else {}
    given = verdict.get("input")
    input_verdict: dict[str, Any] = given if isinstance(given, dict) else {}
    values = set(_strings(output.get("violations")))
    values.update(_strings(input_verdict.get("violations")))
    action = str(output.get("action") or input_verdict.get("action") or "")
    if not action:
        action = "error" if record.status not in ("200", "ok") else "none"
    replies = [{"text": redact.cut(str(r.get("text", "")), max_chars),
                "values": _strings(r.get("values"))} for r in record.replies]
    data: dict[str, object] = {
        "status": record.status, "error_code": record.error_code, "stream": record.stream,
        "generator": record.generator, "principles": list(record.principles),
        "stakes": list(record.stakes), "instruction_s": round(record.instruction_s, 6),
        "duration_s": round(record.duration_s, 6), "tokens": record.tokens,
        "verdict": verdict or None, "attempts": record.attempts,
        "regenerations": len(record.attempts),
        "prompt": [{"role": m["role"], "content": redact.cut(m["content"], max_chars)}
                   for m in record.prompt[-MAX_MESSAGES:]],
        "reply": replies[-1] if replies else None,
        "rejected": replies[:-1],
    }
    return AuditRecord(id=record.request_id, ts=record.started_at, key=record.caller,
                       policy=record.policy, model=record.model, action=action,
                       values=tuple(sorted(values)), data=data)


def _strings(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list | tuple) else []
