"""What the gateway does with a checked reply: allow, annotate, block, or regenerate.

Pure functions on OpenAI-shaped dicts, plus ``enforce``, the regenerate-then-block loop shared
by plain replies and buffered streams.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from proxy.chunks import CONTENT_FILTER
from proxy.errors import ContentBlocked
from proxy.outcome import NOT_CHECKED, Judgement
from proxy.upstream import Completion
from vilmo.policy import Action, Policy
from vilmo.verdict import Verdict


def refusal_completion(model: str, policy: Policy) -> Completion:
    """A complete OpenAI reply carrying the policy's refusal (for blocked requests)."""
    return {"id": f"chatcmpl-vilmo-{uuid.uuid4().hex[:20]}", "object": "chat.completion",
            "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "finish_reason": CONTENT_FILTER,
                         "message": {"role": "assistant", "content": policy.refusal}}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}


def blocked_error(policy: Policy, verdict: Verdict, what: str = "reply") -> ContentBlocked:
    """The error for policies with ``block_with: error``."""
    return ContentBlocked(f"the {what} was blocked by policy {policy.name!r} "
                          f"({', '.join(verdict.violation_ids)})", code=CONTENT_FILTER)


def blocked(completion: Completion, policy: Policy, verdict: Verdict) -> Completion:
    """The reply with each choice the verdict stops replaced by the refusal (with ``n > 1``
    the others stay). Nothing of the blocked text survives."""
    choices = completion.get("choices") or [{"index": 0}]
    return {**completion, "choices": [
        {"index": c.get("index", i), "finish_reason": CONTENT_FILTER,
         "message": {"role": "assistant", "content": policy.refusal}}
        if verdict.stops_choice(int(c.get("index", i))) else c
        for i, c in enumerate(choices)]}


def with_annotation(completion: Completion, verdict: Verdict | None,
                    regenerations: int) -> Completion:
    """The opt-in ``vilmo`` object in the body (only when the client asks for it)."""
    note: dict[str, Any] = {"checked": verdict is not None, "regenerations": regenerations}
    if verdict is not None:
        note.update(verdict.as_dict())
    return {**completion, "vilmo": note}


class RetryRefused(Exception):
    """Raised by ``enforce``'s ``retry`` when the regeneration may not be made (the key's
    ``tpm`` has no room for it): the reply is then treated as at the regeneration limit."""


Reply = TypeVar("Reply")  # a completion, or the chunks of a buffered stream
Noted = Callable[[Judgement, tuple[Verdict, ...]], object]
"""Keeps the final reply's judgement as known so far and the rejected attempts so far
(``Ledger.note``)."""


async def enforce(reply: Reply, verdict: Judgement, policy: Policy,
                  retry: Callable[[Verdict], Awaitable[tuple[Reply, Judgement]]],
                  block: Callable[[Reply, Verdict], Reply], noted: Noted,
                  ) -> tuple[Reply, Judgement, tuple[Verdict, ...]]:
    """Apply the verdict: regenerate up to the policy's limit, then fall back to block (or
    raise ContentBlocked when the policy asks for an error). ``retry`` calls the upstream
    again with a stronger instruction and checks the result. Also returns the verdicts of
    the rejected attempts, in order. Each verdict and attempt is ``noted`` as it comes, before
    anything that may raise (a retry's upstream call, the error of ``block_with: error``), so
    that an error's record still carries them. While a retry runs the final reply is not known:
    a rejected reply is noted as an attempt only, never also as the final reply's verdict (a
    retry that fails would otherwise be recorded, and its rejected text kept, as the reply).
    A ``retry`` that raises ``RetryRefused`` ends the regenerations there."""
    attempts: list[Verdict] = []
    noted(verdict, ())
    while (isinstance(verdict, Verdict) and verdict.action is Action.REGENERATE
           and len(attempts) < policy.max_regenerations):
        attempts.append(verdict)
        noted(NOT_CHECKED, tuple(attempts))
        try:
            reply, verdict = await retry(verdict)
        except RetryRefused:
            attempts.pop()
            noted(verdict, tuple(attempts))
            break
        noted(verdict, tuple(attempts))
    if isinstance(verdict, Verdict) and verdict.stops:
        if policy.block_with == "error":
            raise blocked_error(policy, verdict)
        reply = block(reply, verdict)
    return reply, verdict, tuple(attempts)
