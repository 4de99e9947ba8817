"""The instruction step's cache writes reach the store's writer when the step ends (issue 16):
the writer's thread, woken mid-step, took the GIL from the step it was recording."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from proxy.caches import CacheWriter, StoreCache, writes_after
from proxy.guard import Guard
from proxy.metrics import Metrics
from proxy.store import StoreSettings, open_store
from vilmo.instruct.instructions import Instruction
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
