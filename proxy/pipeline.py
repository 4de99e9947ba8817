"""The request flow of the gateway, top to bottom, one named step per line.

    chat():  1 choose the policy      (key binding, X-Vilmo-Policy header, default)
             2 generate the instruction (VILMO seam: InstructionGenerator)
             3 inject it              (system message or user prefix)
             4 call the upstream      (LiteLLM Router; streamed or not)
             5 record                 (metrics + audit, also for errors and streams)

No framework types and no exception handling here: errors are GatewayErrors raised at the seams
and turned into responses by the app's handlers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from proxy.audit import AuditSink, RequestRecord
from proxy.errors import ModelNotFound, PolicyOverrideForbidden, UnknownPolicyRequested
from proxy.metrics import Metrics
from proxy.middleware import Caller
from proxy.upstream import Chunk, Completion, Upstream
from vilmo.instructions import Instruction, InstructionGenerator, apply_instruction
from vilmo.policy import Policy
from vilmo.policy_store import PolicyStore, UnknownPolicy


@dataclass(slots=True)
class Services:
    """Everything a request needs, built once per app (see ``proxy.app``)."""

    policies: PolicyStore
    instructions: InstructionGenerator
    upstream: Upstream
    metrics: Metrics
    audit: AuditSink

    def record(self, record: RequestRecord, status: str, error_code: str | None = None) -> None:
        record.status, record.error_code = status, error_code
        record.duration_s = time.time() - record.started_at
        self.metrics.record(record)
        self.audit.write(record)


@dataclass(slots=True)
class ChatReply:
    policy: Policy
    instruction: Instruction
    completion: Completion


@dataclass(slots=True)
class ChatStream:
    policy: Policy
    instruction: Instruction
    chunks: AsyncIterator[Chunk]


async def chat(raw: dict[str, Any], stream: bool, caller: Caller, policy_header: str | None,
               services: Services, record: RequestRecord) -> ChatReply | ChatStream:
    """One chat completion through the gateway. ``raw`` is the validated request body."""
    record.model, record.stream = str(raw["model"]), stream
    policy = choose_policy(caller, policy_header, services.policies)            # 1
    record.policy = policy.name
    require_model(services.upstream, record.model)
    instruction = await generate_instruction(services, raw["messages"], policy, record)  # 2
    params = {**raw, "messages": apply_instruction(                             # 3
        raw["messages"], instruction, policy.instructions.placement)}
    if stream:
        return ChatStream(policy, instruction, await open_stream(services.upstream, params))
    completion = await services.upstream.complete(params)                       # 4
    services.record(record, "200")                                              # 5
    return ChatReply(policy, instruction, completion)


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
        raise UnknownPolicyRequested(
            f"unknown policy {name!r}; known: {', '.join(policies.names())}",
            param="X-Vilmo-Policy", code="policy_not_found") from None


def require_model(upstream: Upstream, model: str) -> None:
    if not upstream.serves(model):
        raise ModelNotFound(f"the model {model!r} does not exist on this gateway; "
                            f"available: {', '.join(upstream.model_names())}",
                            param="model", code="model_not_found")


async def generate_instruction(services: Services, messages: list[dict[str, Any]],
                               policy: Policy, record: RequestRecord) -> Instruction:
    """The generator runs in a worker thread: it embeds text, which must not block the loop."""
    started = time.perf_counter()
    instruction = await asyncio.to_thread(services.instructions.generate, messages, policy)
    record.instruction_s = time.perf_counter() - started
    record.generator, record.principles = instruction.generator, instruction.principle_ids
    return instruction


async def open_stream(upstream: Upstream, params: dict[str, Any]) -> AsyncIterator[Chunk]:
    """Start the upstream stream and wait for its first chunk, so that an upstream failure
    before any output still gets its own HTTP status (429, 502, 504) instead of a 200."""
    chunks = upstream.stream(params)
    try:
        first = await anext(chunks)
    except StopAsyncIteration:
        first = None

    async def replay() -> AsyncIterator[Chunk]:
        try:
            if first is not None:
                yield first
            async for chunk in chunks:
                yield chunk
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]

    return replay()
