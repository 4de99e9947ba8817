"""The check-only flow behind POST /v1/values/check: the judge without any model call."""

from __future__ import annotations

from proxy.call import PROMPT_SCAN_CHARS, judged_prompt
from proxy.chunks import readable_text
from proxy.errors import InvalidRequest, PayloadTooLarge
from proxy.guard import ITEM_CHARS, checked_chars, read_chars, too_much_read
from proxy.inputs import checked_input
from proxy.judged_text import Judged, judged, shown_length
from proxy.off_loop import OFF_LOOP_CHARS, off_loop_past
from proxy.outcome import NOT_CHECKED, verdict_of
from proxy.protocol import ValuesCheckRequest, ValuesCheckResult
from proxy.services import Services
from vilmo.instruct.instructions import prompt_text
from vilmo.judge.classifier import ScoreInput
from vilmo.policy import Policy
from vilmo.verdict import SEVERITY, Verdict


async def check_values(request: ValuesCheckRequest, policy: Policy,
                       services: Services) -> ValuesCheckResult:
    """The verdicts on ``request`` under ``policy`` (chosen by the route, before any charge)."""
    inputs: list[ScoreInput] = []
    reply: ScoreInput | None = None
    param = "text" if request.text is not None else "messages"
    if request.text is not None:
        reply = await _judged(request.text, request.prompt, policy, param)
    elif request.messages:
        messages = [m.model_dump(exclude_none=True) for m in request.messages]
        last = messages.pop() if messages[-1]["role"] == "assistant" else None  # the reply
        # the input first (what the chat route's input check reads): one over max_chars is
        # refused before the reply is decoded (final review: a 413 after 0.12 s of decoding
        # was refunded, so a tpm-only key repeated that work for free)
        inputs = await checked_input(messages, policy)
        if last is not None:
            reply = await _judged(readable_text(last), prompt_text(messages), policy, param)
    else:
        raise InvalidRequest("send `text` or `messages`", param="text", code="invalid_request")
    items = [reply] if reply else []
    size, read = checked_chars(items), read_chars(items)  # over max_chars: refused unread
    if (reason := too_much_read(size, read)) is not None:
        raise PayloadTooLarge(f"text to check: {reason}; policy {policy.name!r} refuses such "
                              "a text whatever on_error", param=param, code="check_too_large")
    input_verdict = verdict_of(await services.guard.check(policy, inputs, "input")
                               if inputs else NOT_CHECKED)
    output_verdict = verdict_of(await services.guard.check(policy, [reply], "output")
                                if reply else NOT_CHECKED)
    judged = [v for v in (input_verdict, output_verdict) if v is not None]
    worst = max(judged, key=lambda v: SEVERITY[v.action], default=None)
    return {
        "object": "vilmo.values.check",
        "policy": policy.name,
        "guard": "ok" if len(judged) == (bool(inputs) + bool(reply)) else "error",
        "action": worst.action.value if worst else None,
        "violations": sorted({i for v in judged for i in v.violation_ids}),
        "input": _shown(input_verdict),
        "output": _shown(output_verdict),
    }




def _shown(verdict: Verdict | None) -> dict[str, object] | None:
    return verdict.as_dict() if verdict is not None else None


async def _judged(text: str, prompt: str | None, policy: Policy, param: str) -> Judged:
    """``text`` as the judge reads it, in a worker thread past ``OFF_LOOP_CHARS`` as the chat
    route's input check does: a megabyte of escapes costs about a second to read, and on the
    event loop it held every other request of the worker (``/healthz`` included) that long.
    Its length as sent (``Judged.shown``: ``shown_length``) is what counts against
    ``checks.max_chars``, as on the chat route, and is counted first, in the same step: a text
    over the limit is refused (413) before any decode level is read (1.5 million characters of
    escapes were read for 3-3.7 s before their 413, holding a worker thread)."""
    return await off_loop_past(len(text) + min(len(prompt or ""), PROMPT_SCAN_CHARS), OFF_LOOP_CHARS,
                               _counted_then_read, text, prompt, policy, param)


def _counted_then_read(text: str, prompt: str | None, policy: Policy, param: str) -> Judged:
    """``text`` counted, then read with its prompt as the chat route reads a reply's
    (``proxy.call.judged_prompt``)."""
    shown = shown_length(text)
    if (size := checked_chars([Judged("", None, shown)])) > policy.checks.max_chars:
        raise PayloadTooLarge(f"{size} characters to check (each text counts at least "
                              f"{ITEM_CHARS}); policy {policy.name!r} checks at most "
                              f"{policy.checks.max_chars} (checks.max_chars)",
                              param=param, code="check_too_large")
    return judged(text, judged_prompt(prompt), shown)
