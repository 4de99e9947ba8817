"""The audit record: one immutable record per chat request, built in one place.

The steps of a request return facts (``proxy.outcome.Facts``); ``build_record`` turns the facts
and the final status into the record, and ``Ledger.close`` makes sure that happens exactly once
per request: for a plain reply, at the end of a stream, or for an error (a refusal by the
middleware too). ``Services.finish`` hands the record to the metrics and the ``AuditSink``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass
from typing import Literal

from proxy.chunks import CONTENT_FILTER
from proxy.errors import ClientClosed
from proxy.outcome import Facts, verdict_of
from proxy.protocol import shown_name
from vilmo.policy import Action
from vilmo.verdict import Verdict

Enforced = Literal["relayed", "annotated", "refused", "regenerated", "abandoned"]
CLIENT_LEFT = str(ClientClosed.status)
"""The status of a request the client left (``proxy.errors.ClientClosed``)."""


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """What happened to one request; its JSON (``to_json``) is the audit line (README)."""

    request_id: str
    caller: str
    model: str
    stream: bool
    policy: str
    generator: str
    principles: tuple[str, ...]
    stakes: tuple[str, ...]
    """Values the instruction step judged at stake (stake-aware generators)."""
    status: str
    error_code: str | None
    started_at: float
    instruction_s: float
    duration_s: float
    guard: str
    """The reply check: ok (it ran), error (failed open), off (not checked)."""
    verdict: dict[str, object] | None
    """The reply's verdict (after any regenerations)."""
    input_verdict: dict[str, object] | None
    """The verdict of the client's input (``checks.input``: its messages and tool
    definitions), whatever action it called for."""
    attempts: tuple[dict[str, object], ...]
    """Verdicts of replies that were regenerated, in order."""
    profile: str | None = None
    """The value profile bound to the caller's key (its weights score the request's compliance
    on the dashboard); None: the policy's own weights."""
    key_id: str | None = None
    """The caller's virtual key's id (``caller`` is its name, which need not be unique); None
    for a config key (its name is ``caller``) and for a request without a key."""
    suppressed: int = 0
    """Of a refusal by the key's limits (or of its request refused before any upstream call
    without a verdict: a 400, 413...): how many of the key's refusals like it were left out of the audit trail, since
    its last recorded one (``proxy.refusals.LimitSampler``; each is
    counted in the metrics). In the JSON only when some were: every other record keeps its
    shape."""
    stream_mode: str | None = None
    """How a streamed reply was checked: ``buffer``, ``chunked``, ``monitor`` or ``off``
    (unchecked); None for a plain reply (and a stream that failed before its policy)."""
    enforced: Enforced | None = None
    """What the gateway did (``enforced_of``), beside the policy's ``action``."""

    def to_json(self) -> dict[str, object]:
        shown = asdict(self)
        if not self.suppressed:
            del shown["suppressed"]
        return shown

    @property
    def action(self) -> str:
        """The reply's action, else the input's (a refused request); empty when unchecked.
        The policy's word, not what was done: ``enforced`` says that."""
        for verdict in (self.verdict, self.input_verdict):
            if verdict is not None:
                return str(verdict["action"])
        return ""

    @property
    def values(self) -> tuple[str, ...]:
        """Every value the reply, the input or a rejected attempt was flagged for."""
        found = [v for d in (self.verdict, self.input_verdict, *self.attempts) if d is not None
                 for v in _violations(d)]
        return tuple(dict.fromkeys(found))


def _violations(verdict: dict[str, object]) -> list[str]:
    ids = verdict.get("violations")
    return [str(i) for i in ids] if isinstance(ids, list) else []


def enforced_of(facts: Facts, status: str, error_code: str | None) -> Enforced | None:
    """What the gateway did with the reply, whatever the policy's action says: ``refused``
    (the client got the refusal, or the error of ``block_with: error``, for the request or for
    at least one choice), ``regenerated`` (a regenerated reply went out), ``annotated`` (it
    went out with its violations reported, the ``annotate`` action), ``relayed`` (it went out
    as the upstream wrote it: allowed, unchecked, failed open, or a ``monitor`` stream, which
    enforces nothing whatever its verdict), ``abandoned`` (the client left before the whole
    reply went out, status 499: its work was stopped; what a stream had sent before went out
    as its ``stream_mode`` allows). None for a request that failed otherwise (no whole reply
    went out)."""
    if facts.refused or error_code == CONTENT_FILTER:
        return "refused"
    if status == CLIENT_LEFT:
        return "abandoned"
    if status != "200":
        return None
    verdict = verdict_of(facts.reply)
    if verdict is None or facts.mode == "monitor":
        return "relayed"
    if verdict.stops:
        return "refused"
    if facts.attempts:
        return "regenerated"
    return "annotated" if verdict.action is Action.ANNOTATE else "relayed"


def new_request_id() -> str:
    return f"req-{uuid.uuid4().hex[:16]}"


def _shown(verdict: Verdict | None) -> dict[str, object] | None:
    return verdict.as_dict() if verdict is not None else None


GUARD_UNAVAILABLE = "guard_unavailable"
"""The code of a request a failed check or step ended (``proxy.guard``, failing closed): its
record's guard is ``error`` whatever was judged before (a regeneration's failed check said
``ok``, a first reply's ``off``)."""


def build_record(request_id: str, caller: str, started_at: float, facts: Facts, status: str,
                 error_code: str | None = None, key_id: str | None = None,
                 suppressed: int = 0, duration_s: float | None = None) -> RequestRecord:
    """The one function that makes an audit record. ``duration_s``: as measured on a
    monotonic clock (``Ledger``); else from the wall clock's ``started_at``."""
    instruction = facts.instruction
    return RequestRecord(
        request_id=request_id, caller=caller, model=shown_name(facts.model), stream=facts.stream,
        policy=facts.policy, generator=instruction.generator if instruction else "",
        principles=instruction.principle_ids if instruction else (),
        stakes=instruction.stakes if instruction else (), status=status, error_code=error_code,
        started_at=started_at, instruction_s=facts.instruction_s,
        duration_s=time.time() - started_at if duration_s is None else duration_s,
        guard="error" if error_code == GUARD_UNAVAILABLE else facts.guard,
        verdict=_shown(verdict_of(facts.reply)), input_verdict=_shown(verdict_of(facts.input)),
        attempts=tuple(a.as_dict() for a in facts.attempts), profile=facts.profile,
        key_id=key_id, suppressed=suppressed, stream_mode=facts.mode,
        enforced=enforced_of(facts, status, error_code))


class Ledger:
    """One request's facts so far and whether its record was made: the pipeline replaces
    ``facts`` (immutable) after each step, so an error at any step is recorded with what was
    known; ``close`` builds the record once and only once."""

    def __init__(self, caller: str, request_id: str | None = None,
                 key_id: str | None = None) -> None:
        self.request_id = request_id or new_request_id()
        self.caller = caller
        self.key_id = key_id
        self.started_at = time.time()
        """The wall-clock instant the record shows."""
        self.started = time.monotonic()
        """The same instant on a clock no one steps: the request's duration counts from it."""
        self.facts = Facts()
        self.closed = False
        self.audited = True
        """False: the record goes to the metrics only (``sample``)."""
        self.suppressed = 0

    def sample(self, suppressed: int | None) -> None:
        """A sampler's decision (``proxy.refusals``): None, count the request in the metrics
        only; else audit it, saying how many like it were left out before it."""
        self.audited = suppressed is not None
        self.suppressed = suppressed or 0

    def note(self, facts: Facts) -> Facts:
        self.facts = facts
        return facts

    def close(self, status: str, error_code: str | None = None,
              facts: Facts | None = None) -> RequestRecord | None:
        """The record, the first time; None when it was already made."""
        if self.closed:
            return None
        self.closed = True
        return build_record(self.request_id, self.caller, self.started_at,
                            facts or self.facts, status, error_code, self.key_id,
                            self.suppressed, time.monotonic() - self.started)
