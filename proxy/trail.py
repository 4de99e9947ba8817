"""The one adapter from the gateway's ``RequestRecord`` (and the request's ``Trace``) to the
store's ``AuditRecord``.

Texts (the prompt, the reply, the replies regenerated away) are redacted with the gateway's
``Redactor`` first and cut after, so a secret across the cut never survives in part: each text
to ``MAX_TEXT_CHARS``, all of a record's texts together to ``MAX_RECORD_CHARS`` (``TextBudget``),
and the prompt to its last ``MAX_MESSAGES`` messages. One client with a key and large requests
(50 messages of 4,000 characters fit in the 4 MiB body limit) thus cannot make each record
hundreds of kilobytes and fill the store. Nothing is cut silently: a cut text carries
``truncated: true`` and ``chars`` (its redacted length before the cut), and the record's
``data`` says ``truncated`` (always present) and, when true, ``truncation`` (what was
dropped). The named
fields are the ones ``GET /admin/audit`` filters by; the rest goes to ``data``
(``proxy.store.negatives`` reads ``prompt``, ``reply`` and ``rejected`` from there). The
upstream's replies come in order; the record's ``attempts`` are the verdicts of the ones
regenerated away and ``verdict`` the last one's. A request whose regeneration failed before the
upstream replied (the client got an error) has no final reply: every reply it has is
``rejected``, and ``reply`` is None.

A reply of several choices (``n > 1``) keeps each choice's text with its own verdict's values
(``Verdict.choices``) under ``choices`` (``[{index, text, values}]``, by index); its ``text``
and ``values`` are those of its worst choice (the most severe action, then the most values,
then the lowest index), whose ``index`` it says: a reader of ``text`` and ``values`` never
pairs one choice's text with another's violations. That text is stored twice (it is cut, and
counted against the record's budget, once). A reply of one choice is ``{text, values}`` as it
always was.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.errors import Redactor
from proxy.record import RequestRecord
from proxy.stages import Trace
from proxy.store import AuditRecord
from vilmo.policy import Action
from vilmo.verdict import SEVERITY

MAX_TEXT_CHARS = 4000
"""Per text (each message, each reply), after redaction."""
MAX_RECORD_CHARS = 16_000
"""All the texts of one record together, after redaction: about 16 KB of plain text, at most
about 100 KB stored however odd the characters (JSON writes a control character as six)."""
MAX_MESSAGES = 50
"""The last turns of a prompt that are kept."""


class TextBudget:
    """Cuts one record's texts, each redacted first: to ``per_text`` characters each and to
    ``per_record`` in all, handed out in the order ``cut`` is called (the most telling texts
    first); counts what it cut, for the record's ``truncation``."""

    def __init__(self, redact: Redactor, per_text: int, per_record: int) -> None:
        self.redact = redact
        self.per_text = per_text
        self.left = per_record
        self.texts_cut = 0
        self.chars_dropped = 0

    def cut(self, text: str) -> dict[str, object]:
        """``{"text": ...}`` with ``truncated`` and ``chars`` (the redacted length) when cut."""
        clean = self.redact(text)
        kept = clean[:max(0, min(self.per_text, self.left))]
        self.left -= len(kept)
        if len(kept) == len(clean):
            return {"text": kept}
        self.texts_cut += 1
        self.chars_dropped += len(clean) - len(kept)
        return {"text": kept, "truncated": True, "chars": len(clean)}


def audit_record(record: RequestRecord, trace: Trace | None, redact: Redactor,
                 max_chars: int = MAX_TEXT_CHARS,
                 max_record_chars: int = MAX_RECORD_CHARS) -> AuditRecord:
    """The store's record of one request, its texts redacted then cut."""
    trace = trace or Trace()
    # An unchecked final reply has no verdict; no reply after the attempts: there is none.
    final = record.verdict is not None or len(trace.replies) > len(record.attempts)
    verdicts = [*record.attempts, record.verdict] if final else list(record.attempts)
    kept = min(len(verdicts), len(trace.replies))
    shown = [_choices(trace.choices.get(at, {0: trace.replies[at]}), verdict)
             for at, verdict in zip(range(len(trace.replies) - kept, len(trace.replies)),
                                    verdicts, strict=False)]
    messages = trace.prompt[-MAX_MESSAGES:]
    budget = TextBudget(redact, max_chars, max_record_chars)
    cut_replies, cut_prompt = _cut_in_priority(budget, [[c.text for c in r] for r in shown],
                                               final, [m["content"] for m in messages])
    replies = [_reply(choices, cuts) for choices, cuts in zip(shown, cut_replies, strict=True)]
    dropped = len(trace.prompt) - len(messages)
    truncated = bool(dropped or budget.texts_cut)
    action = record.action or ("none" if record.status == "200" else "error")
    data: dict[str, object] = {
        **record.to_json(),
        "tokens": trace.tokens, "regenerations": len(record.attempts),
        "prompt": [_message(m["role"], cut) for m, cut in zip(messages, cut_prompt, strict=True)],
        "reply": replies[-1] if final and replies else None,
        "rejected": replies[:-1] if final else replies,
        "truncated": truncated,
    }
    if truncated:
        data["truncation"] = {"messages_dropped": dropped, "texts_cut": budget.texts_cut,
                              "chars_dropped": budget.chars_dropped}
    return AuditRecord(id=record.request_id, ts=record.started_at, key=record.caller,
                       key_id=record.key_id, policy=record.policy, model=record.model, action=action,
                       values=record.values, data=data)


@dataclass(frozen=True, slots=True)
class _Choice:
    index: int
    text: str
    values: list[str]


def _choices(texts: dict[int, str], verdict: object) -> list[_Choice]:
    """A reply's choices, each with the values its own verdict flagged, the worst first. With
    several choices and no verdict per choice (an unchecked reply), no choice has values:
    none is labelled with another's."""
    per_choice = verdict.get("choices") if isinstance(verdict, dict) else None
    if not isinstance(per_choice, dict):
        if len(texts) == 1:
            ((index, text),) = texts.items()
            return [_Choice(index, text, _violations(verdict))]
        per_choice = {}
    judged = [(index, text, per_choice.get(str(index))) for index, text in sorted(texts.items())]
    judged.sort(key=lambda c: (-_severity(c[2]), -len(_violations(c[2])), c[0]))
    return [_Choice(index, text, _violations(own)) for index, text, own in judged]


def _severity(verdict: object) -> int:
    action = verdict.get("action") if isinstance(verdict, dict) else None
    try:
        return SEVERITY[Action(str(action))]
    except ValueError:
        return -1


def _cut_in_priority(budget: TextBudget, replies: list[list[str]], final: bool,
                     prompt: list[str],
                     ) -> tuple[list[list[dict[str, object]]], list[dict[str, object]]]:
    """Each text cut (a reply's choices, its worst first), the record's budget spent first on
    the final reply, then the prompt's last message, the replies regenerated away (in order),
    and the rest of the prompt newest first: what the client got and asked come before older
    turns."""
    cut_replies: dict[int, list[dict[str, object]]] = {}
    cut_prompt: dict[int, dict[str, object]] = {}
    rejected = range(len(replies) - 1) if final else range(len(replies))
    if final and replies:
        cut_replies[len(replies) - 1] = [budget.cut(text) for text in replies[-1]]
    if prompt:
        cut_prompt[len(prompt) - 1] = budget.cut(prompt[-1])
    for i in rejected:
        cut_replies[i] = [budget.cut(text) for text in replies[i]]
    for i in range(len(prompt) - 2, -1, -1):
        cut_prompt[i] = budget.cut(prompt[i])
    return ([cut_replies[i] for i in range(len(replies))],
            [cut_prompt[i] for i in range(len(prompt))])


def _message(role: str, cut: dict[str, object]) -> dict[str, object]:
    return {"role": role, "content": cut.pop("text"), **cut}


def _reply(choices: list[_Choice], cuts: list[dict[str, object]]) -> dict[str, object]:
    """``{text, values}`` of the worst choice (``choices[0]``), and with several, its
    ``index`` and every choice's under ``choices``."""
    entries = [{"index": choice.index, "text": cut.pop("text"), "values": choice.values, **cut}
               for choice, cut in zip(choices, cuts, strict=True)]
    worst = {key: value for key, value in entries[0].items() if key != "index"}
    if len(entries) == 1:
        return worst
    return {**worst, "index": choices[0].index,
            "choices": sorted(entries, key=lambda entry: int(str(entry["index"])))}


def _violations(verdict: object) -> list[str]:
    ids = verdict.get("violations") if isinstance(verdict, dict) else None
    return [str(v) for v in ids] if isinstance(ids, list | tuple) else []
