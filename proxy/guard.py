"""The value check around the classifier: timeouts, failure policy, and metrics.

``Guard.check`` scores texts against a policy's values and returns the verdict. When the
classifier fails or runs past ``checks.timeout_s``, a policy with ``on_error: closed`` gets a
``GuardFailed`` (never the unchecked text); ``open`` gets ``FAILED_OPEN``: the caller lets the text
through, marks it, and the failure is counted in ``vilmo_guard_errors_total`` and logged. Texts
longer than ``checks.max_chars`` in all (each counting at least ``ITEM_CHARS``: ``checked_chars``;
a reply's prompt is context and does not count), or whose readings the judge would read at more
than ``READ_FACTOR`` times that length (``read_chars``), are not scored, and fail closed
whatever ``on_error`` says: a client can make a text that long, or send that many texts, so
failing open would let any client choose an unchecked reply. For the same reason a check of
more than ``checks.fail_open_max_chars`` (counted the same way), or that reads more than
``FAIL_OPEN_READ_FACTOR`` times it, fails closed on any failure: a client can choose a text
long enough to run past ``checks.timeout_s`` (the judge reads 0.2-0.4 ms a character on 2
cores) or to be refused as ``Overloaded``; only a smaller check fails open under
``on_error: open``. A check that times out (or whose client left) stops its work: its
unscored parts are dropped by the batcher. A check the batcher's queue would not reach before the timeout is refused at once
(``Overloaded``): the same failure, answered now (503 with Retry-After when closed) instead of
after ``timeout_s`` of queueing.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

from proxy import step_lanes
from proxy.caches import writes_after
from proxy.errors import GuardFailed
from proxy.judged_text import Judged, each_reading, highest_per_item
from proxy.metrics import Metrics
from proxy.outcome import FAILED_INSTRUCTION, FAILED_OPEN, FailedOpen
from proxy.stages import note_prompt, timed
from vilmo.instruct.instructions import (
    MODEL_FREE_GENERATORS,
    Instruction,
    InstructionGenerator,
    message_text,
    prompt_text,
)
from vilmo.judge.batcher import MicroBatcher, Overloaded
from vilmo.judge.classifier import ScoreInput, ValueClassifier
from vilmo.policy import Policy
from vilmo.types import Messages
from vilmo.verdict import Verdict, decide, merge_max, rules_of, worst_of

log = logging.getLogger(__name__)

Stage = Literal["input", "output", "stream", "instruction"]
ClassifierFor = Callable[[Policy], ValueClassifier]
"""The classifier that judges a policy's ids (its values and its custom principles)."""


IN_PLACE_MAX_CHARS = 500
"""The longest prompt whose instruction step may run on the event loop (``Guard.in_place``)."""


INSTRUCTION_READ_CHARS = 4_000
"""The most of the last user turn the instruction step reads (``bounded_turn``): its first and
last half of this. Long prompts are legitimate and pass whole to the upstream, but the step's
cost grew with the turn (the judge's second look read it window by window: a 420 KB turn cost
about 23 s of CPU, going on after its request was answered). The request reader reads only its
first 256 tokens anyway. The second look reads the head and the tail, but only for a turn whose
reader gate falls in its band: a request after a benign preamble (about 560 characters of one),
or in the middle or tail of a long turn, gets no instruction, bounded or whole
(``bench/instruction_reach.py``; README, Security, "What the instruction step sees")."""


BOUNDED_CHARS = 2 * (INSTRUCTION_READ_CHARS // 2) + 2
"""The length of a turn ``bounded_turn`` cut: its two halves and the blank line between."""


def bounded_turn(messages: Messages) -> Messages:
    """The messages with the last user turn's text cut to its first and last
    ``INSTRUCTION_READ_CHARS // 2`` characters (joined by a blank line) when it is longer than
    ``INSTRUCTION_READ_CHARS``: what the instruction step reads (``prompt_text``). The input is
    never modified."""
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].get("role") == "user":
            text = message_text(messages[index])
            if len(text) <= INSTRUCTION_READ_CHARS:
                return messages
            half = INSTRUCTION_READ_CHARS // 2
            turn = {"role": "user", "content": f"{text[:half]}\n\n{text[-half:]}"}
            return [*messages[:index], turn, *messages[index + 1:]]
    return messages


class TextTooLarge(ValueError):
    """More text in one check than the policy's ``checks.max_chars``."""


ITEM_CHARS = 32
"""The least one text of a check counts against ``checks.max_chars``: each text costs a judge
pass of its own, so a check of many tiny texts (90,000 one-character user turns) cost far more
than its characters (it ran past ``checks.timeout_s``, and under ``on_error: open`` passed a
violent turn among them unchecked). Measured on the real judge (2 shared cores): a short text
costs about what 4 characters of a long one do (1.8 ms against 0.42 ms a character), so
counting 32 keeps a check of tiny texts cheaper than a long text of the same count."""


READ_FACTOR = 4
"""What the judge reads of a check (``read_chars``: every reading of its escapes and bidi
runs) is at most this many times what it counts (``checked_chars``) plus ``READ_EXTRA_CHARS``,
or the check is refused as over ``checks.max_chars`` is. Measured (``proxy.judged_text``):
code or prose in a JSON string reads 1.4-1.7 times its length, JSON in a JSON string 1.8-2.5,
Windows paths or regular expressions in JSON 2.5-2.8; only a text written for it reads more
(about 5 times: each of ``DECODE_ROUNDS`` levels once more; ``bench/judged_read_ratio.py``)."""
READ_EXTRA_CHARS = 1_000
"""What a check may read beyond ``READ_FACTOR`` times its count: a short text's readings are
never refused."""
FAIL_OPEN_READ_FACTOR = 2
"""A failed check fails open only while it read at most this many times
``checks.fail_open_max_chars``: a text of escapes under that limit would otherwise choose its
own timeout (at ``READ_FACTOR``, 8,000 characters read as 33,000, 6-13 s of the judge's time)."""


def checked_chars(items: Sequence[ScoreInput]) -> int:
    """What counts against ``checks.max_chars`` and ``checks.fail_open_max_chars``: the texts
    to judge, each at least ``ITEM_CHARS``, each by its length as sent without what renders as
    nothing (``Judged.shown``, as before its escapes were read): a tool result or a reply of
    JSON counts its own size, not the 1.4-2.8 times that its readings make (a 74,000-character
    tool result of source files counted 103,000 against a limit of 100,000). What the judge
    reads of them is bounded apart (``read_chars``, ``READ_FACTOR``). A reply's prompt is only
    context, cut by ``proxy.call.judged_prompt``, and does not count. The check's cost is then
    bounded by the limit (``READ_FACTOR`` times it, plus ``READ_EXTRA_CHARS``, for what the
    judge reads), whatever the number of texts a client sends."""
    return sum(max(item.shown if isinstance(item, Judged) else len(item.response), ITEM_CHARS)
               for item in items)


def read_chars(items: Sequence[ScoreInput]) -> int:
    """What the judge reads of the texts (every reading, ``proxy.judged_text.each_reading``),
    each reading at least ``ITEM_CHARS``: each is a pass of its own."""
    return sum(max(len(item.response), ITEM_CHARS) for item in each_reading(items)[0])


def read_limit(size: int) -> int:
    """The most a check of ``size`` (``checked_chars``) may read (``READ_FACTOR``)."""
    return READ_FACTOR * size + READ_EXTRA_CHARS


def too_much_read(size: int, read: int) -> str | None:
    """Why a check reads too much for its size, or None."""
    if read <= read_limit(size):
        return None
    return (f"{size} characters to check read as {read} once their JSON escapes are decoded at "
            f"each level and bidi runs read as shown, over the most the judge reads: "
            f"{READ_FACTOR} times the characters checked plus {READ_EXTRA_CHARS}")


class Guard:
    def __init__(self, classifier_for: ClassifierFor, metrics: Metrics) -> None:
        self.classifier_for = classifier_for
        self.metrics = metrics
        self._batchers: dict[str, MicroBatcher] = {}  # by policy name
        self.requests_in_flight = 0
        """HTTP requests this process is serving now (kept by
        ``proxy.middleware.UnexpectedErrors``): a lone one's instruction step runs in place."""
        self._steps_in_threads = 0
        """Instruction steps running in worker threads, those whose request timed out included
        (a thread cannot be stopped): while one runs, no step runs in place."""
        self._steps_lock = threading.Lock()
        self.remote_caches = False
        """The instruction step's caches are across the network (Redis, ``proxy.app.
        attach_store``): a lookup may block for the store's timeout, so a model-backed step
        never runs on the event loop."""

    async def check(self, policy: Policy, items: Sequence[ScoreInput], stage: Stage,
                    counted: bool = True) -> Verdict | FailedOpen:
        """The verdict over the items (per id, the highest score of any item's readings,
        ``proxy.judged_text.each_reading``); ``counted``:
        False when the caller counts it with others (a chunked stream's choices, one reply)."""
        scores = await self._scores(policy, items, stage)
        if scores is None:
            return FAILED_OPEN
        verdict = decide(merge_max(scores), policy)
        if counted:
            self.metrics.record_verdict(policy.name, stage, verdict)
        return verdict

    async def check_choices(self, policy: Policy, items: Mapping[int, ScoreInput], stage: Stage,
                            ) -> Verdict | FailedOpen:
        """One verdict per choice of a reply (``n > 1``), judged together; the result is the
        worst of them and keeps each (``Verdict.choices``) so that each choice is acted on."""
        scores = await self._scores(policy, list(items.values()), stage)
        if scores is None:
            return FAILED_OPEN
        verdict = worst_of({i: decide(s, policy) for i, s in zip(items, scores, strict=True)})
        self.metrics.record_verdict(policy.name, stage, verdict)
        return verdict

    async def _scores(self, policy: Policy, items: Sequence[ScoreInput], stage: Stage,
                      ) -> list[dict[str, float]] | None:
        size, read = checked_chars(items), read_chars(items)
        try:
            if size > policy.checks.max_chars:
                raise TextTooLarge(f"{size} characters to check, over checks.max_chars "
                                   f"({policy.checks.max_chars})")
            if (reason := too_much_read(size, read)) is not None:
                raise TextTooLarge(reason)
            with timed("check"):  # not wait_for: in 3.11 it drops a cancel that comes as the
                async with asyncio.timeout(policy.checks.timeout_s):  # scores do (a left client)
                    return await self._score(policy, items)
        except Exception as exc:  # noqa: BLE001 - any failure of the judge is the policy's call
            self.failed(policy, stage, exc, size, read)
            return None

    async def instruction(self, generator: InstructionGenerator, messages: Messages,
                          policy: Policy) -> tuple[Instruction, float]:
        """The instruction and the seconds it took. The generator reads the last user turn cut
        to ``INSTRUCTION_READ_CHARS`` (``bounded_turn``) and runs in a thread of its lane
        (``proxy.step_lanes``: short turns apart from long ones, the long lane bounded) under
        the check timeout, queueing included, but in place,
        without the thread's two hand-offs, for a policy whose generator needs no model
        (``none``, ``static``), and for a short prompt when this is the only request in flight
        and nothing runs beside the step (``in_place``). A failure is handled like a failed
        check of the turn's size (closed, or a turn over ``checks.fail_open_max_chars``: error;
        open: no instruction, ``FAILED_INSTRUCTION``, shown as ``x-vilmo-guard: error``), but a
        step refused, never started, started late or slowed for the load (its thread waited
        for a CPU) fails closed whatever ``on_error`` (``step_lanes.LOAD_FAILURES``). Its cache
        writes reach the store's writer when it ends."""
        note_prompt(messages)  # for the audit trail: the client's turns, without vilmo's
        started = time.perf_counter()
        size = len(prompt_text(messages))
        try:
            with writes_after():  # the store's writer waits for the step (``proxy.caches``)
                if self.in_place(generator, policy, size):
                    instruction = generator.generate(messages, policy)
                else:
                    read = bounded_turn(messages)
                    lane = step_lanes.lane_for(min(size, BOUNDED_CHARS))
                    instruction = await lane.run(policy.checks.timeout_s, self._step_in_thread,
                                                 generator, read, policy)
        except Exception as exc:  # noqa: BLE001 - as for checks: the policy decides
            self.failed(policy, "instruction", exc, size, seconds=time.perf_counter() - started)
            instruction = FAILED_INSTRUCTION
        return instruction, time.perf_counter() - started

    def _step_in_thread(self, generator: InstructionGenerator, messages: Messages,
                        policy: Policy) -> Instruction:
        """``generator.generate`` in a worker thread, counted while it runs: a step whose
        request timed out goes on in its thread, and may hold what a step in place would wait
        for (the reader's caches, the second look's judge batch)."""
        with self._steps_lock:
            self._steps_in_threads += 1
        try:
            return generator.generate(messages, policy)
        finally:
            with self._steps_lock:
                self._steps_in_threads -= 1

    def in_place(self, generator: InstructionGenerator, policy: Policy,
                 turn_chars: int) -> bool:
        """Whether the instruction step runs on the event loop: a model-free generator, or
        nothing in the step that could hold the loop: one request in flight
        (``requests_in_flight``), no input check beside the step (its batch waits for the
        loop), no judge batch still running (a timed-out check's: the step's second look may
        wait for a reading that batch is computing), no step still running in a worker thread
        (a timed-out request's), local caches (``remote_caches``), a
        prompt (``turn_chars``: the last user turn's length) of at most ``IN_PLACE_MAX_CHARS``
        (the step stays a few milliseconds, which the check timeout could not cut short in
        place), and the policy's principles already embedded (a generator's ``prepared``, where
        it has one: a policy added or edited at run time embeds them, about 0.4 s for
        ``default``)."""
        if policy.instructions.generator in MODEL_FREE_GENERATORS:
            return True
        prepared = getattr(generator, "prepared", None)
        return (self.requests_in_flight <= 1 and not policy.checks.input
                and all(batcher.idle for batcher in self._batchers.values())
                and self._steps_in_threads == 0
                and not self.remote_caches
                and turn_chars <= IN_PLACE_MAX_CHARS
                and (prepared is None or bool(prepared(policy))))

    def failed(self, policy: Policy, stage: Stage, exc: BaseException, size: int = 0,
               read: int = 0, seconds: float | None = None) -> None:
        """Count and log a guard failure; raise when the policy fails closed, or the check was
        too large to pass unchecked, whatever ``on_error`` (its size is the client's to choose):
        over ``checks.max_chars`` or reading too much for it (``TextTooLarge``), or, on any
        failure, over ``checks.fail_open_max_chars`` or reading more than
        ``FAIL_OPEN_READ_FACTOR`` times it (a text that long can run past the timeout, or be
        refused as ``Overloaded``, by its size alone). ``size`` is the check's
        ``checked_chars``, ``read`` its ``read_chars``; the instruction step passes the length
        of the last user turn as ``size`` (a client pads a turn to make the step fail: failing
        open would drop the instruction at the client's choice), and a step refused, never
        started, started late or slowed for the load fails closed too (a client floods the
        gateway to make it: ``step_lanes.LOAD_FAILURES``). A failure for the load (those, and
        a check refused as ``Overloaded``) is counted in ``vilmo_guard_load_failures_total``
        too. ``seconds``: what the failed step took, carried by the ``GuardFailed`` for the
        audit record."""
        self.metrics.guard_errors.labels(stage).inc()
        overloaded = isinstance(exc, (Overloaded, *step_lanes.LOAD_FAILURES))
        if overloaded:  # apart, for operators: load, not a broken judge or generator
            self.metrics.guard_load_failures.labels(stage).inc()
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        too_large = isinstance(exc, TextTooLarge)
        if too_large:
            closed = "a text over checks.max_chars is never passed unchecked"
        elif isinstance(exc, step_lanes.LOAD_FAILURES):
            closed = ("a prompt whose step was refused, never started, started late or was "
                      "slowed by the load never goes out without its instruction")
        elif policy.on_error == "closed":
            closed = f"policy {policy.name!r} fails closed"
        elif size > policy.checks.fail_open_max_chars:
            what, fate = (("a prompt", "never goes out without its instruction")
                          if stage == "instruction" else ("a check", "is never passed unchecked"))
            closed = (f"{what} of {size} characters, over checks.fail_open_max_chars "
                      f"({policy.checks.fail_open_max_chars}), {fate}")
        elif read > FAIL_OPEN_READ_FACTOR * policy.checks.fail_open_max_chars:
            closed = (f"a check read as {read} characters, over {FAIL_OPEN_READ_FACTOR} times "
                      f"checks.fail_open_max_chars ({policy.checks.fail_open_max_chars}), is "
                      "never passed unchecked")
        else:
            passed = ("request sent without its instruction" if stage == "instruction"
                      else "text passed unchecked")
            log.error("value check failed at %s; policy %s fails open, %s: %s", stage,
                      policy.name, passed, reason)
            return
        log.warning("value check failed at %s (policy %s; %s): %s", stage, policy.name, closed,
                    reason)
        failure = GuardFailed(f"the value check could not run ({stage}"
                              f"{': ' + str(exc) if too_large or overloaded else ''}); {closed}",
                              code="check_too_large" if too_large else "guard_unavailable",
                              headers={"Retry-After": "1"} if overloaded else None)
        failure.seconds = seconds
        raise failure

    async def _score(self, policy: Policy, items: Sequence[ScoreInput]) -> list[dict[str, float]]:
        if not items:
            return []
        readings, owners = each_reading(items)  # each scored by itself: none dilutes another
        results = await self._batcher(policy).score_many(readings, list(rules_of(policy)),
                                                         within=policy.checks.timeout_s)
        return highest_per_item(owners, [r.violation for r in results])

    def _batcher(self, policy: Policy) -> MicroBatcher:
        """One batcher per policy's judge, so concurrent checks share encoder passes. When a
        reloaded policy brings a new judge, the old batcher is closed once its checks are over."""
        classifier = self.classifier_for(policy)
        batcher = self._batchers.get(policy.name)
        if batcher is None or batcher.classifier is not classifier:
            if batcher is not None:
                old = batcher
                asyncio.get_running_loop().call_later(
                    policy.checks.timeout_s + 1.0, lambda: asyncio.ensure_future(old.aclose()))
            batcher = self._batchers[policy.name] = MicroBatcher(classifier)
        return batcher

    async def aclose(self) -> None:
        for batcher in self._batchers.values():
            await batcher.aclose()

