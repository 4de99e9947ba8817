"""``vilmo export negatives``: flagged replies from the audit trail as training samples.

A pure function over audit records, so it works on either backend and in tests. It reads three
fields of ``AuditRecord.data`` (the gateway must record them; the request's own fields are not
enough):

- ``prompt``: the client's messages, ``[{"role", "content"}]``, without vilmo's instruction
  (the sample should teach the model, not the instruction);
- ``reply``: ``{"text", "values"}``, the last reply the upstream produced and the values it
  violated (empty when it passed);
- ``rejected``: ``[{"text", "values"}]``, the replies regenerated away, in order.

A reply of several choices (``n > 1``) also has ``choices`` (``[{"index", "text", "values"}]``,
each choice's text with its own values); each violating choice is then a sample of its own
text, and only a final reply none of whose choices violated is a chosen reply (its first
choice). Its ``text`` and ``values`` (its worst choice's) are not read again. A reply of several
choices recorded before ``choices`` was (its verdict has ``choices``, it has none) paired the
first choice's text with the worst choice's values: it gives no sample, and is counted
(``LeftOut.unpaired``).

Formats: ``d2o`` (one line per violating reply: prompt, rejected reply, violated values, the
regenerated reply where one passed; D2O learns from negatives alone) and ``dpo`` (TRL's
conversational preference format: prompt, chosen, rejected; only where a regenerated reply
passed, since DPO needs a chosen reply).

The trail cuts texts (``proxy.trail``: each to 4,000 characters, a record's to 16,000, the prompt
to its last 50 turns) and says so (``truncated``). A cut text is no sample to train on as if it
were whole (a reply that stops mid-sentence, a conversation that has lost its first turns), so a
sample with a cut text (its prompt, its rejected or its chosen reply) is left out and counted
(``LeftOut``); with ``include_truncated`` it is written with ``truncated: true``. A prompt whose older turns
the trail dropped starts at its first user turn (after any system or developer messages): the
assistant and tool turns left before it answer turns that are gone. A prompt nothing was
dropped from is the conversation as the model got it, an opening assistant greeting included.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal, TextIO

from proxy.store.records import AuditRecord

NegativeFormat = Literal["d2o", "dpo"]


@dataclass(frozen=True, slots=True)
class _Reply:
    text: str
    values: tuple[str, ...]
    cut: bool = False
    """The trail cut this text (``truncated: true``)."""


@dataclass(slots=True)
class LeftOut:
    """Samples left out because a text in them was cut (written with ``include_truncated``)."""

    truncated: int = 0
    unpaired: int = 0
    """Replies of several choices recorded without each choice's text (older records)."""


def negative_samples(records: Iterable[AuditRecord], fmt: NegativeFormat,
                     since: float | None = None, include_truncated: bool = False,
                     left_out: LeftOut | None = None) -> Iterator[dict[str, object]]:
    """One sample per reply that violated a value, from records at or after ``since``; a
    sample with a cut text only with ``include_truncated`` (then marked ``truncated: true``),
    else counted in ``left_out``."""
    for record in records:
        if since is not None and record.ts < since:
            continue
        prompt, prompt_cut = _prompt(record.data)
        if not prompt:
            continue
        unpaired = LeftOut()
        finals = _replies(record.data.get("reply"), record.data.get("verdict"), unpaired)
        attempts = _list(record.data.get("attempts"))  # the rejected replies' verdicts
        rejected = [r for at, value in enumerate(_list(record.data.get("rejected")))
                    for r in _replies(value, attempts[at] if at < len(attempts) else None,
                                      unpaired)]
        if left_out is not None:
            left_out.unpaired += unpaired.unpaired
        chosen: _Reply | None
        if any(final.values for final in finals):
            rejected += finals
            chosen = None
        else:
            chosen = finals[0] if finals and rejected else None
        for reply in rejected:
            if not reply.values or (fmt == "dpo" and chosen is None):
                continue
            cut = prompt_cut or reply.cut or (chosen is not None and chosen.cut)
            if cut and not include_truncated:
                if left_out is not None:
                    left_out.truncated += 1
                continue
            marked: dict[str, object] = {"truncated": True} if cut else {}
            if fmt == "dpo":
                assert chosen is not None
                yield {"prompt": prompt,
                       "chosen": [{"role": "assistant", "content": chosen.text}],
                       "rejected": [{"role": "assistant", "content": reply.text}], **marked}
            else:
                yield {"prompt": prompt, "rejected": reply.text,
                       "violated_values": list(reply.values),
                       "regenerated": chosen.text if chosen is not None else None,
                       "request_id": record.id, "policy": record.policy,
                       "model": record.model, **marked}


def write_jsonl(samples: Iterable[dict[str, object]], out: TextIO) -> int:
    """Write samples as JSON Lines; returns how many."""
    count = 0
    for sample in samples:
        out.write(json.dumps(sample, ensure_ascii=False) + "\n")
        count += 1
    return count


def _prompt(data: Mapping[str, object]) -> tuple[list[dict[str, str]], bool]:
    """The prompt's messages, and whether the trail cut it: turns dropped (``truncation``; a
    record marked ``truncated`` without saying what counts as cut) or a message's text cut.
    Where turns were dropped, from its first user turn (system and developer messages before
    it kept); else whole, an opening assistant turn included."""
    messages: list[dict[str, str]] = []
    cut = False
    for message in _list(data.get("prompt")):
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            messages.append({"role": str(message.get("role", "user")),
                             "content": message["content"]})
            cut = cut or message.get("truncated") is True
    truncation = data.get("truncation")
    dropped = truncation.get("messages_dropped", 1) if isinstance(truncation, dict) else 1
    turns_dropped = data.get("truncated") is True and dropped != 0
    if not turns_dropped:
        return messages, cut
    first_user = next((i for i, m in enumerate(messages) if m["role"] == "user"), len(messages))
    kept = [m for i, m in enumerate(messages)
            if i >= first_user or m["role"] in ("system", "developer")]
    return (kept if first_user < len(messages) else []), True


def _replies(value: object, verdict: object, left_out: LeftOut) -> list[_Reply]:
    """A recorded reply's texts with their values: each of its ``choices`` where it has them
    (by index), else its one ``text``; none when its verdict was per choice but its texts
    were not (``LeftOut.unpaired``)."""
    if isinstance(value, dict) and isinstance(value.get("choices"), list):
        return [r for r in map(_reply, _list(value["choices"])) if r is not None]
    if isinstance(value, dict) and isinstance(verdict, dict) and verdict.get("choices"):
        left_out.unpaired += 1
        return []
    reply = _reply(value)
    return [reply] if reply is not None else []


def _reply(value: object) -> _Reply | None:
    if not isinstance(value, dict) or not isinstance(value.get("text"), str):
        return None
    return _Reply(value["text"], tuple(str(v) for v in _list(value.get("values"))),
                  value.get("truncated") is True)


def _list(value: object) -> list[object]:
    return list(value) if isinstance(value, list) else []
