"""The request flow of the gateway, top to bottom, one named step per line, for plain and
streamed requests alike.

    chat():  1 choose the policy        (key binding, X-Vilmo-Policy header, default)
             2 check the input          (every message and tool definition; a block
                                         never reaches the upstream)
             3 generate the instruction (VILMO seam: InstructionGenerator; alongside 2)
             4 inject it                (system message or user prefix)
             5 call the upstream        (direct or LiteLLM Router; a stream is opened, first
                                         chunk read)
             6 check the reply          (value classifier → verdict)
             7 act                      (allow, annotate, block, regenerate)
             8 record                   (metrics + audit: for a plain reply by the route once
                                         its response is made, so a reply that cannot be
                                         sent is a 500; at its end for a stream, by
                                         ``proxy.sse``; for errors, by the app's handlers
                                         from the facts noted so far)

Streams: buffer mode runs steps 6-7 here (``streaming.buffered``); chunked and monitor mode
return a lazy iterator (``streaming.live``) that runs them as the client reads.

Steps 2 and 3 run side by side (both are model passes; a refused request drops the
instruction). The upstream waits for the input verdict only when that verdict may stop the
request (``input_may_stop``): a policy whose input rules only allow or annotate records the
verdict, so the call goes out at once and the verdict is awaited before the response's headers
(a failed check under ``on_error: closed`` still fails the request, and closes the call).

Each step returns facts; ``ledger.note`` keeps the latest, so an error at any step is recorded
with what was known, and ``proxy.record.build_record`` is the one place a record is made.
No framework types and no exception handling here: errors are GatewayErrors raised at the
seams and turned into responses by the app's handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from proxy.actions import Noted, blocked, blocked_error, enforce, refusal_completion
from proxy.call import Call, escalate, open_timed_stream
from proxy.chunks import chunk_like, iterate, refusal_chunks, reply_texts
from proxy.errors import (
    GuardFailed,
    ModelNotFound,
    PolicyOverrideForbidden,
    PolicyUnavailable,
    UnknownPolicyRequested,
)
from proxy.inputs import checked_input
from proxy.middleware import Caller
from proxy.outcome import (
    FAILED_INSTRUCTION,
    NOT_CHECKED,
    Facts,
    Finish,
    Judgement,
    Reply,
    Stream,
    StreamMode,
)
from proxy.policy_reload import policy_named, policy_names
from proxy.protocol import UpstreamParams, shown_name
from proxy.record import Ledger
from proxy.services import Services
from proxy.streaming import buffered, live
from proxy.upstream import Chunk, Completion, Upstream
from vilmo.instruct.instructions import NO_INSTRUCTION
from vilmo.judge.classifier import ScoreInput
from vilmo.policy import Policy
from vilmo.policy_store import PolicyStore, UnknownPolicy
from vilmo.verdict import Verdict, rules_of

Item = TypeVar("Item")


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """One admitted chat request. ``params`` is the validated body, cut to the allow-listed
    fields by ``proxy.admission.admit``."""

    params: UpstreamParams
    stream: bool
    caller: Caller
    policy_header: str | None
    ledger: Ledger


async def chat(req: ChatRequest, services: Services) -> Reply | Stream:
    """One chat completion through the gateway: a reply, or a stream to send."""
    note = req.ledger.note
    facts = note(Facts(model=str(req.params["model"]), stream=req.stream))
    policy = await choose_policy(req.caller, req.policy_header, services.policies)  # 1
    facts = note(replace(facts, policy=policy.name,
                         profile=req.caller.key.profile if req.caller.key else None))
    require_model(services.upstream, facts.model, req.caller)
    turns = await checked_turns(req.params, policy)
    checking = asyncio.ensure_future(check_input(services, turns, policy))        # 2
    instructing = asyncio.ensure_future(services.guard.instruction(               # 3
        services.instructions, req.params["messages"], policy))
    pending: asyncio.Future[Judgement] | None = checking
    try:
        if input_may_stop(policy) or not policy.checks.input:  # unchecked: done at once
            facts = note(replace(facts, input=await checking))
            pending = None
            if isinstance(facts.input, Verdict) and facts.input.stops:
                return refuse_input(req, policy, note(replace(facts, refused=True)), services)
        try:
            instruction, seconds = await instructing
        except GuardFailed as failed:  # the step failed closed: recorded with guard "error"
            note(replace(facts, instruction=FAILED_INSTRUCTION,  # and the time it took
                         instruction_s=failed.seconds or 0.0))
            raise
        facts = note(replace(facts, instruction=instruction, instruction_s=seconds))
        return await call_upstream(req, services, Call(req.params, policy, instruction), facts,
                                   pending)
    finally:
        settle(checking)
        settle(instructing)


async def call_upstream(req: ChatRequest, services: Services, call: Call, facts: Facts,
                        pending_input: asyncio.Future[Judgement] | None) -> Reply | Stream:
    """Steps 4-8. ``pending_input``: the input check still running, when its verdict only
    records (awaited before the reply is returned); None when it was awaited already."""
    note = req.ledger.note
    policy = call.policy                                                          # 4: in call
    if req.stream:
        return await stream_reply(call, facts, services, req.ledger, pending_input)  # 5-8
    try:
        completion = await services.upstream.complete(call.params())              # 5
    except Exception:
        await note_pending_input(pending_input, facts, req.ledger)
        raise
    if pending_input is not None:
        facts = note(replace(facts, input=await pending_input))
    verdict = await check_reply(services, call, completion)                       # 6

    async def regenerate(previous: Verdict) -> tuple[Completion, Judgement]:
        await escalate(call, previous, services.metrics, services.bank)
        retried = await services.upstream.complete(call.params())
        return retried, await check_reply(services, call, retried)

    completion, verdict, attempts = await enforce(                               # 7
        completion, verdict, policy, regenerate,
        lambda reply, why: blocked(reply, policy, why), noting(req.ledger, facts))
    facts = note(replace(facts, reply=verdict, attempts=attempts))
    return Reply(completion, call, facts)                       # 8: once sent (proxy.routes)


async def stream_reply(call: Call, facts: Facts, services: Services, ledger: Ledger,
                       pending_input: asyncio.Future[Judgement] | None = None) -> Stream:
    """Steps 5-8 for a stream: opened under its deadline; buffer mode enforced now. An input
    verdict still pending is awaited once the stream is open (the headers carry it)."""
    policy = call.policy
    mode: StreamMode = policy.streaming.mode if policy.checks.output else "off"
    facts = ledger.note(replace(facts, mode=mode))
    deadline = asyncio.get_running_loop().time() + policy.streaming.stream_timeout_s
    try:
        chunks = await open_timed_stream(services.upstream, call.params(), deadline)  # 5
    except Exception:
        await note_pending_input(pending_input, facts, ledger)
        raise
    if pending_input is not None:
        try:
            facts = ledger.note(replace(facts, input=await pending_input))
        except BaseException:
            await chunks.aclose()  # type: ignore[attr-defined]
            raise
    if mode != "buffer":                                                         # 6-7 lazily
        return Stream(ClosingLive(live(call, chunks, services, mode), chunks), call, facts,
                      recorder(ledger, facts, services))                         # 8 at the end
    held, verdict, attempts = await buffered(call, chunks, services, deadline,  # 6-7
                                             noting(ledger, facts))
    facts = ledger.note(replace(facts, reply=verdict, attempts=attempts))
    return Stream(iterate(held), call, facts, recorder(ledger, facts, services))  # 8


class ClosingLive(AsyncIterator[Item]):
    """A live stream (``streaming.live``) whose ``aclose`` closes its upstream ``chunks`` too,
    also before it was read: a generator closed before it started never runs its ``finally``,
    so a stream whose client left before its first read (``proxy.disconnect``) left its
    upstream stream open until collected (review mr3)."""

    def __init__(self, items: AsyncIterator[Item], chunks: AsyncIterator[Chunk]) -> None:
        self.items = items
        self.chunks = chunks

    def __aiter__(self) -> ClosingLive[Item]:
        return self

    async def __anext__(self) -> Item:
        return await anext(self.items)

    async def aclose(self) -> None:
        try:
            await self.items.aclose()  # type: ignore[attr-defined]
        finally:
            await self.chunks.aclose()  # type: ignore[attr-defined]


def noting(ledger: Ledger, facts: Facts) -> Noted:
    """Step 7's verdicts and attempts into the ledger as they come: a reply blocked with an
    error (``block_with: error``) or a regeneration that fails is recorded with them."""
    def noted(reply: Judgement, attempts: tuple[Verdict, ...]) -> Facts:
        return ledger.note(replace(facts, reply=reply, attempts=attempts))
    return noted


def recorder(ledger: Ledger, facts: Facts, services: Services) -> Finish:
    """Step 8 for a stream: run by ``proxy.sse`` when it ends, with the reply's judgement."""
    def finish(reply: Judgement, status: str, error_code: str | None) -> None:
        services.finish(ledger, status, error_code, replace(facts, reply=reply))
    return finish


async def note_pending_input(pending: asyncio.Future[Judgement] | None, facts: Facts,
                             ledger: Ledger) -> None:
    """The upstream failed before an input verdict that only records came in: the error's
    record still carries it (the check is bounded by its own timeout; its own failure is not
    the one reported)."""
    if pending is not None:
        with contextlib.suppress(Exception):
            ledger.note(replace(facts, input=await pending))


def input_may_stop(policy: Policy) -> bool:
    """Whether the input verdict can refuse the request (a rule that blocks or regenerates):
    only then must the upstream wait for it."""
    return any(rule.stops for rule in rules_of(policy).values())


def settle(task: asyncio.Future[Any]) -> None:
    """A step's task that is no longer wanted: cancelled if still running, and its outcome
    retrieved either way (a failure nobody awaits is not an error)."""
    if not task.done():
        task.cancel()
    task.add_done_callback(lambda done: done.cancelled() or done.exception())


async def choose_policy(caller: Caller, header: str | None, policies: PolicyStore,
                        param: str = "X-Vilmo-Policy") -> Policy:
    """The header's policy when the caller may choose it, else the key's, else the default.
    ``param``: where the client named it (the check route's body field ``policy`` too). A key
    may name its bound policy and those its ``policies`` list (``proxy.key_config``): any other
    is a 403, whether loaded or not (the names of policies it may not use are not told)."""
    if header:
        if not caller.allow_policy_header:
            raise PolicyOverrideForbidden(
                f"this API key may not choose a policy ({param}: {shown_name(header)!r})",
                param=param, code="policy_override_forbidden")
        if not caller.may_choose(header, policies.default_name):
            raise PolicyOverrideForbidden(
                f"this API key may not choose the policy {shown_name(header)!r} ({param}); "
                "the gateway's operator lists the policies a key may choose",
                param=param, code="policy_not_allowed")
        name: str | None = header
    else:
        name = caller.policy
    try:
        return await policy_named(policies, name)  # a reload pass runs off the loop
    except UnknownPolicy:
        if not header:  # the key's binding: the gateway's configuration is wrong, not the call
            which = (f"policy {shown_name(name)!r} this API key is bound to" if name
                     else "default policy")
            raise PolicyUnavailable(f"the {which} is not loaded on the gateway; ask its operator",
                                    code="policy_unavailable") from None
        shown = caller.choosable(policy_names(policies), policies.default_name)
        known = f"; known: {', '.join(shown)}" if caller.sees_config and shown else ""
        raise UnknownPolicyRequested(f"unknown policy {shown_name(str(name))!r}{known}",
                                     param=param, code="policy_not_found") from None


def require_model(upstream: Upstream, model: str, caller: Caller) -> None:
    if not upstream.serves(model):
        known = f"; available: {', '.join(upstream.model_names())}" if caller.sees_config else ""
        raise ModelNotFound(
            f"the model {shown_name(model)!r} does not exist on this gateway{known}",
            param="model", code="model_not_found")


async def checked_turns(raw: UpstreamParams, policy: Policy) -> list[ScoreInput]:
    """The client's input the check scores (none without ``checks.input``): every message of
    the roles ``checks.input_roles`` names, whatever its role (the client writes them all),
    and the tool definitions (``proxy.inputs``). Read from the client's messages, before the
    instruction is injected (``Call.params``), so the gateway's own text is never judged as
    the client's. Refused before the upstream is called: a part the judge cannot read (400,
    under ``checks.unreadable_parts: refuse``), and input over ``checks.max_chars`` (413,
    whatever ``on_error``)."""
    if not policy.checks.input:
        return []
    return await checked_input(raw["messages"], policy, raw)


async def check_input(services: Services, turns: list[ScoreInput], policy: Policy,
                      ) -> Judgement:
    """Every input text is scored, not only the last user turn; per value the highest score
    counts."""
    if not policy.checks.input:
        return NOT_CHECKED
    return await services.guard.check(policy, turns, "input")


def refuse_input(req: ChatRequest, policy: Policy, facts: Facts, services: Services,
                 ) -> Reply | Stream:
    """A blocked request: the refusal (or an error), and the upstream is never called. Its
    usage is zero: in the plain reply's body, and as a stream's last chunk when the client set
    ``stream_options.include_usage`` (``proxy.chunks.for_client`` drops it otherwise)."""
    assert isinstance(facts.input, Verdict)
    if policy.block_with == "error":
        raise blocked_error(policy, facts.input, "request")
    call = Call(req.params, policy, NO_INSTRUCTION)
    refusal = refusal_completion(facts.model, policy)
    if req.stream:
        template: Chunk = {"id": refusal["id"], "created": refusal["created"],
                           "model": refusal["model"]}
        usage: Chunk = {**chunk_like(template, None), "usage": refusal["usage"]}  # sent only
        chunks = [*refusal_chunks(template, policy.refusal), usage]  # when the client asked
        facts = req.ledger.note(replace(facts, mode="off"))
        return Stream(iterate(chunks), call, facts, recorder(req.ledger, facts, services))
    return Reply(refusal, call, facts)


async def check_reply(services: Services, call: Call, completion: Completion) -> Judgement:
    """Each choice is judged on its own readable text (``n > 1``: one verdict per choice)."""
    if not call.policy.checks.output:
        return NOT_CHECKED
    texts = reply_texts(completion)
    return await services.guard.check_choices(
        call.policy, await call.checked_choices(texts), "output")
