"""The instruction step's cache writes reach the store's writer when the step ends, and in the
gateway when the request's response has been sent (issue 16): the writer's thread, woken
mid-step, took the GIL from the step it was recording, and woken at the step's end it competed
with the upstream call and the first chunks."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import openai
from fakes import FakeUpstream, fake_services
from stub_upstream import ServerThread

from proxy.app import create_app
from proxy.caches import CacheWriter, StoreCache, writes_after
from proxy.guard import Guard
from proxy.metrics import Metrics
from proxy.protocol import UpstreamParams
from proxy.replies import ChatCompletionChunk
from proxy.store import StoreSettings, open_store
from vilmo.instruct.instructions import Instruction
from vilmo.instruct.principles import PrincipleBank
from vilmo.policy import Policy
from vilmo.types import Messages


class Recording(StoreCache):
    """A store cache that records, from the writer's thread, what was written."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.written: list[str] = []
        self.wrote = threading.Event()

    def write(self, key: str, value: bytes) -> None:
        super().write(key, value)
        self.written.append(key)
        self.wrote.set()


def caches(tmp_path: Path) -> tuple[Recording, CacheWriter]:
    writer = CacheWriter()
    store = open_store(StoreSettings(path=tmp_path / "state.db"))
    return Recording(store, "instruction", writer), writer


def test_writes_in_the_block_wait_for_its_end_and_are_read_meanwhile(tmp_path: Path) -> None:
    cache, writer = caches(tmp_path)
    with writes_after():
        cache.put("prompt", b"be kind")
        assert cache.get("prompt") == b"be kind"  # pending: this process never misses it
        assert not cache.wrote.wait(0.2)
        assert cache.written == []
    assert cache.wrote.wait(5)
    assert cache.written == ["prompt"]
    writer.close()
    assert cache.store.cache_get("instruction", "prompt") == b"be kind"


def test_a_block_inside_an_open_one_adds_its_writes_to_the_outer_one(tmp_path: Path) -> None:
    """The step's block inside its request's: its writes wait for the request's end."""
    cache, writer = caches(tmp_path)
    with writes_after():
        with writes_after():
            cache.put("inner", b"v")
        assert not cache.wrote.wait(0.2) and cache.written == []
        assert cache.get("inner") == b"v"
    assert cache.wrote.wait(5)
    writer.close()
    assert cache.written == ["inner"]


def test_a_write_after_the_block_ended_goes_straight_to_the_writer(tmp_path: Path) -> None:
    """A timed-out step's thread may write after the step: nothing waits for a closed block."""
    cache, writer = caches(tmp_path)
    late = threading.Event()

    def later() -> None:
        late.wait(5)
        cache.put("late", b"v")

    with writes_after():
        thread = threading.Thread(target=later)
        thread.start()
    late.set()
    thread.join(5)
    assert cache.wrote.wait(5)
    writer.close()
    assert cache.written == ["late"]


class Writing:
    """A generator that writes to the cache, and notes whether the writer had written yet."""

    def __init__(self, cache: Recording) -> None:
        self.cache = cache
        self.written_during: list[str] | None = None

    def generate(self, messages: Messages, policy: Policy) -> Instruction:
        self.cache.put("step", b"v")
        self.cache.wrote.wait(0.2)
        self.written_during = list(self.cache.written)
        return Instruction("be kind")


def test_the_instruction_step_writes_its_cache_values_when_it_ends(tmp_path: Path) -> None:
    cache, writer = caches(tmp_path)
    generator = Writing(cache)
    guard = Guard(lambda policy: None, Metrics(["stub"]))  # type: ignore[arg-type,return-value]
    policy = Policy.model_validate({"name": "p", "values": {"mft.care": {}},
                                    "instructions": {"generator": "vilmo"}})
    for in_place in (True, False):
        cache.written.clear()
        cache.wrote.clear()
        guard.requests_in_flight = 1 if in_place else 2
        instruction, _ = asyncio.run(guard.instruction(generator, [
            {"role": "user", "content": "hi"}], policy))
        assert instruction.text == "be kind"
        assert generator.written_during == []
        assert cache.wrote.wait(5)
    writer.close()


class Putting:
    """A generator that writes one cache value and returns at once."""

    def __init__(self, cache: Recording) -> None:
        self.cache = cache

    def generate(self, messages: Messages, policy: Policy) -> Instruction:
        self.cache.put("step", b"v")
        return Instruction("be kind")


class PausedUpstream(FakeUpstream):
    """The fake upstream's stream, paused after its first chunk until ``go`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.go = threading.Event()

    async def stream(self, params: UpstreamParams) -> AsyncIterator[ChatCompletionChunk]:
        first = True
        async for chunk in super().stream(params):
            yield chunk
            if first:
                first = False
                await asyncio.to_thread(self.go.wait, 5)


def test_a_requests_cache_writes_wait_for_its_response_to_end(policy_dir: Path,
                                                              tmp_path: Path) -> None:
    """The step's writes went to the writer when the step ended, so the writer's thread ran
    beside the upstream call and the first chunks (0.1 to 0.27 ms of the first token at c=1
    on 2 cores, issue 16); now when the response's last byte is sent. Through HTTP with the
    openai client, on a stream whose first chunk has reached the client."""
    cache, writer = caches(tmp_path)
    upstream = PausedUpstream()
    services = fake_services(policy_dir, PrincipleBank.load(), upstream)
    services.instructions = Putting(cache)
    services.config.store.path = tmp_path / "gateway.db"
    try:
        with ServerThread(create_app(services.config, lambda config: services)) as server:
            client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", timeout=10,
                                   max_retries=0)
            stream = client.chat.completions.create(
                model="stub", messages=[{"role": "user", "content": "hi"}], stream=True,
                extra_headers={"X-Vilmo-Policy": "g-allow-monitor"})
            chunks = iter(stream)
            assert next(chunks).choices[0].delta.content  # the stream is under way
            assert cache.get("step") == b"v"  # read while held: this process never misses it
            assert not cache.wrote.wait(0.3) and cache.written == []
            upstream.go.set()
            assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert cache.wrote.wait(5) and cache.written == ["step"]
    finally:
        upstream.go.set()
        writer.close()
