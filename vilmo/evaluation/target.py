"""Sampling replies from a target model (any LiteLLM model) for training and evaluation.

Concurrency is bounded, requests are spaced to a rate limit, failures are retried with
exponential backoff, and every call's tokens are counted, so a long `vilmo train generator` or
`vilmo eval` run is polite to the provider and reports what it cost.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from vilmo.errors import VilmoError
from vilmo.types import Messages


@dataclass(frozen=True, slots=True)
class TargetModel:
    """Which model to sample and how: a LiteLLM model name plus server and sampling settings."""

    model: str
    api_base: str | None = None
    api_key: str | None = None
    temperature: float = 1.0
    max_tokens: int = 128
    concurrency: int = 8
    requests_per_minute: float | None = None
    retries: int = 3
    timeout_s: float = 120.0

    def __post_init__(self) -> None:
        if self.concurrency < 1:  # asyncio.Semaphore(0) would wait forever, silently
            raise ValueError(f"concurrency must be at least 1, not {self.concurrency}")
        if self.requests_per_minute is not None and not self.requests_per_minute > 0:
            raise ValueError(f"requests_per_minute must be positive, not "
                             f"{self.requests_per_minute}")
        if self.retries < 0:
            raise ValueError(f"retries must be 0 or more, not {self.retries}")


@dataclass(slots=True)
class Costs:
    """What sampling has cost so far."""

    calls: int = 0
    failed_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"calls": self.calls, "failed_calls": self.failed_calls,
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens}


class TargetError(VilmoError, RuntimeError):
    """The target failed after every retry."""


@dataclass
class TargetClient:
    """Samples K replies per prompt from one target, within its concurrency and rate limits."""

    target: TargetModel
    costs: Costs = field(default_factory=Costs)
    _semaphore: asyncio.Semaphore | None = None
    _next_slot: float = 0.0

    async def sample(self, messages: Messages, k: int) -> list[str]:
        """K independent replies (one call each: not every server supports ``n``)."""
        return list(await asyncio.gather(*(self.complete(messages) for _ in range(k))))

    async def complete(self, messages: Messages) -> str:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.target.concurrency)
        async with self._semaphore:
            for attempt in range(self.target.retries + 1):
                await self._wait_for_rate_limit()
                try:
                    return await self._call(messages)
                except Exception as exc:  # provider errors vary; all are retried alike
                    self.costs.failed_calls += 1
                    if attempt == self.target.retries:
                        raise TargetError(f"{self.target.model}: {exc}") from exc
                    await asyncio.sleep(min(2.0 ** attempt, 30.0))
        raise AssertionError("unreachable")

    async def _call(self, messages: Messages) -> str:
        import litellm  # heavy: only when a target is really called

        params: dict[str, Any] = {
            "model": self.target.model, "messages": messages,
            "temperature": self.target.temperature, "max_tokens": self.target.max_tokens,
            "timeout": self.target.timeout_s,
        }
        if self.target.api_base:
            params["api_base"] = self.target.api_base
        if self.target.api_key:
            params["api_key"] = self.target.api_key
        response = await litellm.acompletion(**params)
        self.costs.calls += 1
        usage = getattr(response, "usage", None)
        if usage is not None:
            self.costs.prompt_tokens += int(getattr(usage, "prompt_tokens", 0) or 0)
            self.costs.completion_tokens += int(getattr(usage, "completion_tokens", 0) or 0)
        return str(response.choices[0].message.content or "")

    async def _wait_for_rate_limit(self) -> None:
        rpm = self.target.requests_per_minute
        if not rpm:
            return
        now = time.monotonic()
        slot = max(now, self._next_slot)
        self._next_slot = slot + 60.0 / rpm
        if slot > now:
            await asyncio.sleep(slot - now)
