"""How often chunked and monitor modes disagree with the plain whole-reply check, on benign
replies (a benchmark, not a test; issue 12, point 3).

Replies: HH-RLHF helpful ``chosen`` replies (the last assistant turn, with the human turn
before it as the prompt) from /work/shared/data/fulcra/hh_helpful_test.jsonl. Each is judged
as a plain reply, then streamed word by word through ``proxy.chunked.windowed`` (the gateway's
chunked mode, real classifier, the shipped default policy with every action set to block), and
through the old window rule (windows of N tokens with N/2 tokens of context, judged alone; the
baseline, same run). Among the replies the plain check allows it prints:

    window flags   replies where some check of the reply so far was flagged (chunked mode then
                   holds the rest until the whole-reply check: latency, not a block)
    blocked        replies chunked mode ends with a refusal (the false-positive rate)
    old blocked    the same under the old window rule (the baseline)

and, among replies the plain check flags, how many chunked mode delivered whole.

    python bench/bench_window_fp.py [--replies 300] [--windows 16 40]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bench_classifier import cpu_info

from proxy.call import Call
from proxy.chunked import windowed
from proxy.chunks import tokens
from proxy.guard import Guard
from proxy.metrics import Metrics
from proxy.outcome import Judged
from proxy.replies import ChatCompletionChunk, ReplyMessage
from vilmo.instruct.instructions import Instruction
from vilmo.judge.classifier import ScoreInput
from vilmo.judge.policy_classifier import PolicyClassifiers
from vilmo.policy import Action, Policy, load_policy
from vilmo.verdict import Verdict

DATA = Path("/work/shared/data/fulcra/hh_helpful_test.jsonl")
REPO = Path(__file__).resolve().parent.parent


def hh_replies(n: int) -> list[tuple[str, str]]:
    """(prompt, reply) pairs: the last human turn and the assistant's answer to it."""
    out = []
    for line in DATA.read_text().splitlines():
        chosen = json.loads(line)["chosen"]
        human, _, reply = chosen.rpartition("\n\nAssistant:")
        prompt = human.rpartition("\n\nHuman:")[2].strip()
        if reply.strip() and prompt:
            out.append((prompt, reply.strip()))
        if len(out) == n:
            break
    return out


def blocking(policy: Policy, window: int) -> Policy:
    values = {k: v.model_copy(update={"action": Action.BLOCK}) for k, v in policy.values.items()}
    streaming = policy.streaming.model_copy(update={"mode": "chunked", "window_tokens": window})
    checks = policy.checks.model_copy(update={"timeout_s": 120.0})  # a shared, busy CPU
    return policy.model_copy(update={"values": values, "streaming": streaming, "checks": checks})


async def words(reply: str) -> AsyncIterator[ChatCompletionChunk]:
    def chunk(delta: ReplyMessage, finish: str | None = None) -> ChatCompletionChunk:
        return {"id": "c", "model": "m", "created": 0,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    yield chunk({"role": "assistant", "content": ""})
    for i, word in enumerate(reply.split(" ")):
        yield chunk({"content": word if i == 0 else " " + word})
    yield chunk({}, "stop")


class CountingGuard(Guard):
    """The gateway's guard, counting flagged checks of the reply so far."""

    flagged = 0

    async def check(self, policy: Policy, items: Any, stage: Any, counted: bool = True) -> Any:
        verdict = await super().check(policy, items, stage, counted)
        if stage == "stream" and isinstance(verdict, Verdict) and verdict.stops:
            self.flagged += 1
        return verdict


async def chunked(guard: CountingGuard, policy: Policy, prompt: str, reply: str,
                  ) -> tuple[bool, bool]:
    """(some window was flagged, the stream ended with a refusal)."""
    messages = [{"role": "user", "content": prompt}]
    call = Call({"messages": messages}, policy, Instruction(""))
    before = guard.flagged
    finishes = [c["choices"][0].get("finish_reason")
                async for c in windowed(call, words(reply), guard)
                if not isinstance(c, Judged) and c.get("choices")]
    return guard.flagged > before, "content_filter" in finishes


async def old_rule(guard: Guard, policy: Policy, prompt: str, reply: str, window: int) -> bool:
    """Whether the old chunked mode stopped the reply: windows of ``window`` tokens, each with
    ``window // 2`` words before it, judged alone."""
    released, pending = "", ""
    for i, word in enumerate(reply.split(" ")):
        pending += word if i == 0 else " " + word
        last = i == len(reply.split(" ")) - 1
        if tokens(pending) >= window or last:
            context = " ".join(released.split()[-(window // 2):])
            verdict = await guard.check(policy, [ScoreInput(f"{context} {pending}".strip(),
                                                            prompt)], "stream")
            if isinstance(verdict, Verdict) and verdict.stops:
                return True
            released, pending = released + pending, ""
    return False


def rate(k: int, n: int) -> str:
    return f"{k}/{n} = {100 * k / max(n, 1):.1f} %"


async def run(replies: int, windows: list[int]) -> None:
    base = load_policy(REPO / "vilmo" / "policies" / "default.yaml")
    classifiers = PolicyClassifiers()
    guard = CountingGuard(classifiers, Metrics())
    pairs = hh_replies(replies)
    plain_policy = blocking(base, 40)
    classifiers(plain_policy).score([ScoreInput("warm-up")], list(plain_policy.values))
    started = time.perf_counter()
    plain = [(await guard.check(plain_policy, [ScoreInput(r, p)], "output")) for p, r in pairs]
    allowed = [i for i, v in enumerate(plain) if v is not None and not v.stops]
    flagged = [i for i, v in enumerate(plain) if v is not None and v.stops]
    print(f"{len(pairs)} HH helpful replies, {sum(len(r) for _, r in pairs) // len(pairs)} "
          f"characters on average; the plain check allows {len(allowed)}, flags {len(flagged)}")
    for window in windows:
        policy = blocking(base, window)
        results = [await chunked(guard, policy, *pairs[i]) for i in range(len(pairs))]
        old = [await old_rule(guard, policy, *pairs[i], window) for i in allowed]
        print(f"window {window:3d} tokens, benign: window flags "
              f"{rate(sum(results[i][0] for i in allowed), len(allowed))}, blocked "
              f"{rate(sum(results[i][1] for i in allowed), len(allowed))}; old rule blocked "
              f"{rate(sum(old), len(allowed))}")
        print(f"                 flagged by plain: delivered whole "
              f"{rate(sum(not results[i][1] for i in flagged), len(flagged))}")
    await guard.aclose()
    cpu = cpu_info()["cpu"]
    print(f"{time.perf_counter() - started:.0f} s on {cpu}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--replies", type=int, default=300)
    parser.add_argument("--windows", type=int, nargs="+", default=[16, 40])
    args = parser.parse_args()
    asyncio.run(run(args.replies, args.windows))


if __name__ == "__main__":
    main()
