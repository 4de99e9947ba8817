"""The request flow of the gateway, top to bottom, one named step per line.

    chat():  1 choose the policy        (key binding, X-Vilmo-Policy header, default)
             2 check the user turns     (all of them; a block never reaches the upstream)
             3 generate the instruction (VILMO seam: InstructionGenerator)
             4 inject it                (system message or user prefix)
             5 call the upstream        (LiteLLM Router; streams go to proxy.streaming)
             6 check the reply          (value classifier → verdict)
             7 act                      (allow, annotate, block, regenerate)
             8 record                   (metrics + audit, also for errors and streams)

No framework types and no exception handling here: errors are GatewayErrors raised at the seams
and turned into responses by the app's handlers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from proxy.actions import blocked, blocked_error, enforce, refusal_completion
from proxy.audit import RequestRecord, note_prompt, note_reply
from proxy.chunks import iterate, refusal_chunks, reply_texts, until
from proxy.errors import (
    ModelNotFound,
    PolicyOverrideForbidden,
    StreamTimeout,
    UnknownPolicyRequested,
)
from proxy.middleware import Caller
from proxy.services import Services
from proxy.upstream import Chunk, Completion, Upstream, open_stream
from vilmo.classifier import ScoreInput
from vilmo.instructions import (
    Instruction,
    apply_instruction,
    message_text,
    prompt_text,
    strengthen,
)
from vilmo.policy import Policy
from vilmo.policy_store import PolicyStore, UnknownPolicy
from vilmo.verdict import Verdict

GuardState = Literal["ok", "error", "off"]


@dataclass(slots=True)
class Call:
    """What goes to the upstream: the request with the instruction placed."""

    raw: dict[str, Any]
    policy: Policy
    instruction: Instruction

    def params(self) -> dict[str, Any]:
        placed = apply_instruction(self.raw["messages"], self.instruction,
                                   self.policy.instructions.placement)
        return {**self.raw, "messages": placed}

    def checked(self, text: str) -> ScoreInput:
        return ScoreInput(response=text, prompt=prompt_text(self.raw["messages"]) or None)


@dataclass(slots=True)
class ChatReply:
    call: Call
    completion: Completion
    verdict: Verdict | None = None
    guard: GuardState = "off"
    input_verdict: Verdict | None = None
    regenerations: int = 0


@dataclass(slots=True)
class ChatStream:
    call: Call
    chunks: AsyncIterator[Chunk]
    input_verdict: Verdict | None = None
    refused: bool = False
    deadline: float = float("inf")
    """Event-loop time by which the stream must end (``streaming.stream_timeout_s``)."""


async def chat(raw: dict[str, Any], stream: bool, caller: Caller, policy_header: str | None,
               services: Services, record: RequestRecord) -> ChatReply | ChatStream:
    """One chat completion through the gateway. ``raw`` is the validated request body, cut
    to the allow-listed fields by ``proxy.admission.admit``."""
    record.model, record.stream = str(raw["model"]), stream
    note_prompt(record, raw["messages"])
    policy = choose_policy(caller, policy_header, services.policies)            # 1
    record.policy = policy.name
    require_model(services.upstream, record.model, caller)
    input_verdict = await check_input(services, raw, policy)                     # 2
    if input_verdict is not None and input_verdict.stops:
        return refuse_input(raw, stream, policy, input_verdict, services, record)
    instruction = await services.guard.instruction(                             # 3
        services.instructions, raw["messages"], policy, record)
    record.stakes = instruction.stakes
    call = Call(raw, policy, instruction)                                       # 4
    if stream:
        deadline = asyncio.get_running_loop().time() + policy.streaming.stream_timeout_s
        return ChatStream(call, await open_timed_stream(services.upstream, call.params(),  # 5
                                                        deadline), input_verdict, deadline=deadline)
    completion = await services.upstream.complete(call.params())                 # 5
    verdict, guard = await check_reply(services, call, completion)               # 6
    note_reply(record, reply_texts(completion), verdict, completion.get("usage"))

    async def regenerate(previous: Verdict) -> tuple[Completion, Verdict | None]:
        escalate(services, call, record, previous)
        retried = await services.upstream.complete(call.params())
        checked = (await check_reply(services, call, retried))[0]
        note_reply(record, reply_texts(retried), checked, retried.get("usage"))
        return retried, checked

    completion, verdict, regenerations = await enforce(                          # 7
        completion, verdict, policy, regenerate,
        lambda reply, why: blocked(reply, policy, why))
    record.verdict = verdict.as_dict() if verdict else None
    services.record(record, "200")                                              # 8
    return ChatReply(call, completion, verdict, guard, input_verdict, regenerations)


def escalate(services: Services, call: Call, record: RequestRecord, previous: Verdict) -> None:
    """Before a regeneration: a stronger instruction from the violated principles; the
    rejected attempt is kept in the audit record."""
    services.metrics.regenerations.labels(call.policy.name).inc()
    record.attempts.append(previous.as_dict())
    call.instruction = strengthen(call.instruction, previous.violation_ids, call.policy,
                                  services.bank)


def choose_policy(caller: Caller, header: str | None, policies: PolicyStore) -> Policy:
    """The header's policy when the caller may choose, else the key's, else the default."""
    if header:
        if not caller.allow_policy_header:
            raise PolicyOverrideForbidden(
                f"this API key may not choose a policy (X-Vilmo-Policy: {header!r})",
                param="X-Vilmo-Policy", code="policy_override_forbidden")
        name: str | None = header
    else:
        name = caller.policy
    try:
        return policies.get(name)
    except UnknownPolicy:
        known = f"; known: {', '.join(policies.names())}" if caller.sees_config else ""
        raise UnknownPolicyRequested(f"unknown policy {name!r}{known}",
                                     param="X-Vilmo-Policy", code="policy_not_found") from None


def require_model(upstream: Upstream, model: str, caller: Caller) -> None:
    if not upstream.serves(model):
        known = f"; available: {', '.join(upstream.model_names())}" if caller.sees_config else ""
        raise ModelNotFound(f"the model {model!r} does not exist on this gateway{known}",
                            param="model", code="model_not_found")


async def check_input(services: Services, raw: dict[str, Any], policy: Policy,
                      ) -> Verdict | None:
    """Every user turn is scored, not only the last; per value the highest score counts."""
    if not policy.checks.input:
        return None
    turns = [ScoreInput(message_text(m)) for m in raw["messages"]
             if m.get("role") == "user" and message_text(m).strip()]
    return await services.guard.check(policy, turns, "input")


def refuse_input(raw: dict[str, Any], stream: bool, policy: Policy, verdict: Verdict,
                 services: Services, record: RequestRecord) -> ChatReply | ChatStream:
    """A blocked request: the refusal (or an error), and the upstream is never called."""
    record.verdict = {"input": verdict.as_dict()}
    if policy.block_with == "error":
        raise blocked_error(policy, verdict, "request")
    call = Call(raw, policy, Instruction(""))
    refusal = refusal_completion(str(raw["model"]), policy)
    if stream:
        return ChatStream(call, iterate(refusal_chunks(refusal, policy.refusal)), verdict,
                          refused=True)
    services.record(record, "200")
    return ChatReply(call, refusal, verdict, "ok", verdict)


async def open_timed_stream(upstream: Upstream, params: dict[str, Any], deadline: float,
                            ) -> AsyncIterator[Chunk]:
    """The upstream stream (first chunk awaited), ending with StreamTimeout at ``deadline``."""
    try:
        async with asyncio.timeout_at(deadline):
            chunks = await open_stream(upstream, params)
    except TimeoutError:
        raise StreamTimeout("the stream ran past streaming.stream_timeout_s",
                            code="stream_timeout") from None
    return until(deadline, chunks)


async def check_reply(services: Services, call: Call, completion: Completion,
                      ) -> tuple[Verdict | None, GuardState]:
    """Each choice is judged on its own readable text (``n > 1``: one verdict per choice)."""
    if not call.policy.checks.output:
        return None, "off"
    texts = reply_texts(completion)
    verdict = await services.guard.check_choices(
        call.policy, {i: call.checked(t) for i, t in texts.items()}, "output")
    return verdict, "ok" if verdict is not None else "error"
