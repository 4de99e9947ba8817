"""The one adapter from the gateway's ``RequestRecord`` (and the request's ``Trace``) to the
store's ``AuditRecord``.

Texts (the prompt, the reply, the replies regenerated away) are redacted with the gateway's
``Redactor`` first and cut to ``MAX_TEXT_CHARS`` after, so a secret across the cut never survives
in part and one huge prompt cannot bloat the trail. The named fields are the ones
``GET /admin/audit`` filters by; the rest goes to ``data`` (``proxy.store.negatives`` reads
``prompt``, ``reply`` and ``rejected`` from there). The upstream's replies come in order; the
record's ``attempts`` are the verdicts of the ones regenerated away and ``verdict`` the last one's.
A request whose regeneration failed before the upstream replied (the client got an error) has
no final reply: every reply it has is ``rejected``, and ``reply`` is None.
"""

from __future__ import annotations

from proxy.errors import Redactor
from proxy.record import RequestRecord
from proxy.stages import Trace
from proxy.store import AuditRecord

MAX_TEXT_CHARS = 4000
"""Per text (each message, each reply)."""
MAX_MESSAGES = 50
"""The last turns of a prompt that are kept."""


def audit_record(record: RequestRecord, trace: Trace | None, redact: Redactor,
                 max_chars: int = MAX_TEXT_CHARS) -> AuditRecord:
    """The store's record of one request, its texts redacted then cut."""
    trace = trace or Trace()
    # An unchecked final reply has no verdict; no reply after the attempts: there is none.
    final = record.verdict is not None or len(trace.replies) > len(record.attempts)
    verdicts = [*record.attempts, record.verdict] if final else list(record.attempts)
    texts = trace.replies[-len(verdicts):] if verdicts else []
    replies = [{"text": redact.cut(text, max_chars), "values": _violations(verdict)}
               for text, verdict in zip(texts, verdicts, strict=False)]
    action = record.action or ("none" if record.status == "200" else "error")
    data: dict[str, object] = {
        **record.to_json(),
        "tokens": trace.tokens, "regenerations": len(record.attempts),
        "prompt": [{"role": m["role"], "content": redact.cut(m["content"], max_chars)}
                   for m in trace.prompt[-MAX_MESSAGES:]],
        "reply": replies[-1] if final and replies else None,
        "rejected": replies[:-1] if final else replies,
    }
    return AuditRecord(id=record.request_id, ts=record.started_at, key=record.caller,
                       key_id=record.key_id, policy=record.policy, model=record.model, action=action,
                       values=record.values, data=data)


def _violations(verdict: object) -> list[str]:
    ids = verdict.get("violations") if isinstance(verdict, dict) else None
    return [str(v) for v in ids] if isinstance(ids, list | tuple) else []
