"""``vilmo export negatives``: flagged replies from the audit trail as training samples.

A pure function over audit records, so it works on either backend and in tests. It reads three
fields of ``AuditRecord.data`` (the gateway must record them; the request's own fields are not
enough):

- ``prompt``: the client's messages, ``[{"role", "content"}]``, without vilmo's instruction
  (the sample should teach the model, not the instruction);
- ``reply``: ``{"text", "values"}``, the last reply the upstream produced and the values it
  violated (empty when it passed);
- ``rejected``: ``[{"text", "values"}]``, the replies regenerated away, in order.

Formats: ``d2o`` (one line per violating reply: prompt, rejected reply, violated values, the
regenerated reply where one passed; D2O learns from negatives alone) and ``dpo`` (TRL's
conversational preference format: prompt, chosen, rejected; only where a regenerated reply
passed, since DPO needs a chosen reply).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal, TextIO

from proxy.store.records import AuditRecord

NegativeFormat = Literal["d2o", "dpo"]


@dataclass(frozen=True, slots=True)
class _Reply:
    text: str
    values: tuple[str, ...]


def negative_samples(records: Iterable[AuditRecord], fmt: NegativeFormat,
                     since: float | None = None) -> Iterator[dict[str, object]]:
    """One sample per reply that violated a value, from records at or after ``since``."""
    for record in records:
        if since is not None and record.ts < since:
            continue
        prompt = _messages(record.data.get("prompt"))
        final = _reply(record.data.get("reply"))
        rejected = [r for r in map(_reply, _list(record.data.get("rejected"))) if r]
        if not prompt:
            continue
        if final is not None and final.values:
            rejected.append(final)
            chosen = None
        else:
            chosen = final.text if final is not None and rejected else None
        for reply in rejected:
            if not reply.values:
                continue
            if fmt == "dpo":
                if chosen is not None:
                    yield {"prompt": prompt,
                           "chosen": [{"role": "assistant", "content": chosen}],
                           "rejected": [{"role": "assistant", "content": reply.text}]}
            else:
                yield {"prompt": prompt, "rejected": reply.text,
                       "violated_values": list(reply.values), "regenerated": chosen,
                       "request_id": record.id, "policy": record.policy,
                       "model": record.model}


def write_jsonl(samples: Iterable[dict[str, object]], out: TextIO) -> int:
    """Write samples as JSON Lines; returns how many."""
    count = 0
    for sample in samples:
        out.write(json.dumps(sample, ensure_ascii=False) + "\n")
        count += 1
    return count


def _messages(value: object) -> list[dict[str, str]]:
    messages = []
    for message in _list(value):
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            messages.append({"role": str(message.get("role", "user")),
                             "content": message["content"]})
    return messages


def _reply(value: object) -> _Reply | None:
    if not isinstance(value, dict) or not isinstance(value.get("text"), str):
        return None
    return _Reply(value["text"], tuple(str(v) for v in _list(value.get("values"))))


def _list(value: object) -> list[object]:
    return list(value) if isinstance(value, list) else []
