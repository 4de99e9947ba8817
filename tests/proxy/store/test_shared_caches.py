"""The instruction step's caches in the store (``proxy.caches``): one replica reads what another
computed, values expire after the config's TTL, and a failing store is a miss that is counted,
never a failed request. On both backends; the encoder and the models' work are fakes, the
generator and the store are real."""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import redis
from store_fixtures import (
    MakeStore,
    backend_fixture,  # noqa: F401 - a fixture
    make_store_fixture,  # noqa: F401 - a fixture
)

from proxy.app import attach_store
from proxy.caches import CacheWriter, StoreCache, attach_caches
from proxy.store import CacheName, Store, StoreSettings, open_store
from vilmo.instruct.generator import VilmoGenerator
from vilmo.instruct.instructions import Instruction
from vilmo.instruct.principles import PrincipleBank
from vilmo.instruct.stakes import StakesModel
from vilmo.judge.embedder import Int8Embedder
from vilmo.policy import Policy
from vilmo.types import Matrix

sys.path.insert(0, str(Path(__file__).parents[2]))
from fakes import fake_services
from generator_fakes import seeded_vector

POLICY = Policy.model_validate({"name": "learned", "values": {"mft.care": {}},
                                "instructions": {"generator": "vilmo"}})
PROMPT = [{"role": "user", "content": "My coworker humiliated me. How do I get revenge?"}]


class CountingEmbedder(Int8Embedder):
    """The int8 encoder's caching with a seeded vector per text instead of the network."""

    def __init__(self) -> None:
        super().__init__()
        self.encoded: list[str] = []

    def _run(self, texts: Sequence[str]) -> Matrix:
        self.encoded += texts
        return np.stack([seeded_vector(t) for t in texts])


class CountingGenerator(VilmoGenerator):
    """The VILMO generator, counting the instructions it computes (cache misses)."""

    def __init__(self, embedder: CountingEmbedder | None = None,
                 stakes: StakesModel | None = None) -> None:
        self.embedder = embedder or CountingEmbedder()
        super().__init__(PrincipleBank.load(), self.embedder, stakes or StakesModel.load())
        self.chosen = 0

    def choose(self, prompt: str, policy: Policy) -> Instruction:
        self.chosen += 1
        return super().choose(prompt, policy)


def replica(store: Store) -> tuple[CountingGenerator, dict[CacheName, StoreCache]]:
    generator = CountingGenerator()
    return generator, attach_caches(generator, store)


def test_a_replica_reads_the_instruction_and_embedding_another_computed(
        make_store: MakeStore) -> None:
    one, one_caches = replica(make_store())
    two, two_caches = replica(make_store())
    first = one.generate(PROMPT, POLICY)
    assert one.chosen == 1 and one_caches["instruction"].counts() == (0, 1)
    assert one.embedder.encoded == [PROMPT[0]["content"]]
    assert two.generate(PROMPT, POLICY) == first  # the same instruction, not computed again
    assert two.chosen == 0 and two_caches["instruction"].counts() == (1, 0)
    # Another policy misses the instruction cache but finds the prompt's embedding.
    other = Policy.model_validate(POLICY.model_dump() | {"name": "other"})
    two.generate(PROMPT, other)
    assert two.chosen == 1 and two.embedder.encoded == []
    assert two_caches["embedding"].counts()[0] >= 1
    assert two.embedder.encode([PROMPT[0]["content"]])[0] == pytest.approx(
        seeded_vector(PROMPT[0]["content"]))


class OtherBuildEmbedder(CountingEmbedder):
    """The encoder as built from other weight files or by another onnxruntime."""

    model_id = "other-build"


def test_a_replica_with_other_models_reads_none_of_their_work(make_store: MakeStore) -> None:
    """A rolling upgrade: replicas with other models share the store but not their rows or
    instructions (both are the models' output)."""
    one, _ = replica(make_store())
    one.generate(PROMPT, POLICY)
    other_build = CountingGenerator(OtherBuildEmbedder())
    attach_caches(other_build, make_store())
    other_build.generate(PROMPT, POLICY)
    assert other_build.chosen == 1 and other_build.embedder.encoded == [PROMPT[0]["content"]]
    stakes = StakesModel.load()
    other_heads = CountingGenerator(stakes=dataclasses.replace(stakes, bias=stakes.bias + 0.01))
    attach_caches(other_heads, make_store())
    other_heads.generate(PROMPT, POLICY)
    assert other_heads.chosen == 1  # its own instruction...
    assert other_heads.embedder.encoded == []  # ...from the same encoder's cached embedding


def test_a_policy_is_prepared_once_its_principles_are_embedded() -> None:
    generator = CountingGenerator()
    assert not generator.prepared(POLICY)
    generator.prepare(POLICY)
    assert generator.prepared(POLICY)
    assert not generator.prepared(Policy.model_validate(
        POLICY.model_dump() | {"instructions": {"generator": "relevance"}}))


def test_cached_instructions_expire_after_the_configured_ttl(make_store: MakeStore) -> None:
    store = make_store(instruction_cache_ttl_s=0.3)
    generator, caches = replica(store)
    generator.generate(PROMPT, POLICY)
    generator.generate(PROMPT, POLICY)
    assert generator.chosen == 1 and caches["instruction"].counts() == (1, 1)
    time.sleep(0.45)
    generator.generate(PROMPT, POLICY)
    assert generator.chosen == 2 and caches["instruction"].counts() == (1, 2)
    assert generator.embedder.encoded == [PROMPT[0]["content"]]  # its TTL is a day


def test_a_store_that_fails_is_a_miss_counted_as_a_store_error(
        make_store: MakeStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store = make_store()
    generator, caches = replica(store)

    def broken(*args: object) -> None:
        raise RuntimeError("a bug in the backend")

    monkeypatch.setattr(store.backend, "cache_get", broken)
    monkeypatch.setattr(store.backend, "cache_set", broken)
    generator.generate(PROMPT, POLICY)
    generator.generate(PROMPT, POLICY)
    assert generator.chosen == 2 and caches["instruction"].counts() == (0, 2)
    assert store.health().errors["cache"] >= 4


def test_an_unreachable_redis_is_a_miss_and_the_step_goes_on(tmp_path: Path) -> None:
    store = open_store(StoreSettings(url="redis://127.0.0.1:9/0", timeout_s=0.2, retry_s=30,
                                     spool_dir=tmp_path / "spool"))
    try:
        generator, caches = replica(store)
        generator.generate(PROMPT, POLICY)
        generator.generate(PROMPT, POLICY)
        assert generator.chosen == 2 and caches["instruction"].counts() == (0, 2)
        assert store.health().errors["cache"] >= 2 and not store.health().reachable
    finally:
        store.close()


def test_the_gateway_counts_both_caches_in_its_metrics(make_store: MakeStore) -> None:
    services = fake_services(Path(__file__).parents[3] / "vilmo" / "policies",
                             PrincipleBank.load())
    generator = CountingGenerator()
    services.instructions = generator
    attach_store(services, make_store())
    generator.generate(PROMPT, POLICY)
    generator.generate(PROMPT, POLICY)
    text = services.metrics.exposition().decode()
    assert 'vilmo_cache_requests_total{cache="instruction",result="hit"} 1.0' in text
    assert 'vilmo_cache_requests_total{cache="instruction",result="miss"} 1.0' in text
    assert 'vilmo_cache_requests_total{cache="embedding",result="miss"}' in text


def test_only_a_local_store_lets_the_instruction_step_run_on_the_event_loop(
        make_store: MakeStore, backend: str) -> None:
    """A Redis lookup may block for the store's timeout, which the event loop must not wait
    out; the embedded SQLite file answers from the local disk."""
    services = fake_services(Path(__file__).parents[3] / "vilmo" / "policies",
                             PrincipleBank.load())
    attach_store(services, make_store())
    assert services.guard.remote_caches is (backend == "redis")


def test_the_redis_cache_keys_live_under_the_prefix(make_store: MakeStore, backend: str) -> None:
    if backend != "redis":
        pytest.skip("Redis key names")
    store = make_store()
    generator, _ = replica(store)
    generator.generate(PROMPT, POLICY)
    client = redis.Redis.from_url(str(store.settings.url))
    names = [n.decode() for n in client.scan_iter(match=f"{store.settings.prefix}:cache:*")]
    client.close()
    for cache in ("instruction", "embedding"):
        assert any(n.startswith(f"{store.settings.prefix}:cache:{cache}:") for n in names)


def test_the_instruction_step_does_not_wait_for_cache_writes(
        policy_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache write only records: the gateway's request (the instruction step on its path to
    the upstream) goes on while the store is slow to write, and this process reads the value
    before it lands; it lands once the store answers. Through HTTP with the openai client."""
    import openai
    from stub_upstream import ServerThread

    from proxy.app import create_app
    from proxy.store import Store

    released = threading.Event()
    written: list[str] = []
    write = Store.cache_set

    def slow_write(self: Store, cache: CacheName, key: str, value: bytes) -> None:
        released.wait(10)
        written.append(cache)
        write(self, cache, key, value)

    monkeypatch.setattr(Store, "cache_set", slow_write)
    services = fake_services(policy_dir, PrincipleBank.load())
    generator = services.instructions = CountingGenerator()
    services.config.store.path = tmp_path / "state.db"
    try:
        with ServerThread(create_app(services.config, lambda config: services)) as server:
            client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", timeout=3,
                                   max_retries=0)
            for _ in range(2):
                raw = client.chat.completions.with_raw_response.create(
                    model="stub", messages=[{"role": "user", "content": PROMPT[0]["content"]}],
                    extra_headers={"X-Vilmo-Policy": "learned"})
                assert raw.http_response.status_code == 200
            assert generator.chosen == 1 and written == []  # the second: read while queued
            released.set()
    finally:
        released.set()
    assert sorted(written) == ["embedding", "instruction"]  # written out before the store closed


class StalledCache(StoreCache):
    """A store cache whose writes hang until ``release`` is set."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.name: CacheName = "instruction"

    def write(self, key: str, value: bytes) -> None:
        self.release.wait(10)


def test_a_stalled_store_does_not_hold_the_shutdown() -> None:
    """``CacheWriter.close`` waited without a bound for queued writes: a hung store write (a
    Redis that stopped answering) held the gateway's shutdown."""
    stalled = StalledCache()
    writer = CacheWriter(max_pending=2)
    for n in range(3):
        writer.submit(stalled, f"k{n}", b"v")
    started = time.monotonic()
    writer.close(timeout_s=0.2)
    assert time.monotonic() - started < 2.0
    stalled.release.set()
