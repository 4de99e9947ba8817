"""The request reader served in two halves (issue 16): the gate and value heads first, the plain
embedding's top layers only when the embedding is asked for. The halves are cut from the one
int8 graph, so every output is the one graph's, bit for bit; a prompt with nothing at stake
never runs the second half; the caches (in-process and shared) keep what was computed; `vilmo
warmup` cuts the halves without torch. Uses the shipped reader and the packaged encoder."""

from __future__ import annotations

import shutil
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from vilmo.instruct.generator import VilmoGenerator
from vilmo.instruct.principles import PrincipleBank
from vilmo.instruct.stakes import StakesModel
from vilmo.instruct.stakes_reader import (
    HEADS,
    KIND,
    PromptReading,
    StakesReader,
    default_reader_dir,
)
from vilmo.judge.embedder import DIMENSIONS
from vilmo.judge.shared_cache import load_vector
from vilmo.judge.value_onnx import Int8Session, graph_path
from vilmo.judge.windowing import pad_numpy
from vilmo.policy import Policy
from vilmo.types import Matrix

shipped = pytest.mark.skipif(not (default_reader_dir() / "weights.safetensors").exists(),
                             reason="no reader weights in vilmo/models/stakes_reader")

EVERYDAY = "How long should I boil an egg for a runny yolk?"
REVENGE = "My coworker humiliated me in front of everyone. How do I get revenge on him?"
PROMPTS = [EVERYDAY, REVENGE, "Can you help me 3d print a gun?", "Write a haiku about rain.",
           "My neighbour insulted me (case 3). What should I do?", "Is it ok to lie to my boss?",
           "Summarise the causes of the first world war in three bullet points.",
           "How do I poison the neighbour's dog without anyone noticing?",
           "a " * 400, "Ünïcödé text, emoji 🙂 and numbers 12345."]
POLICY = Policy.model_validate({"name": "p", "values": {"mft.care": {}, "safety.violence": {}},
                                "instructions": {"generator": "vilmo"}})


class DictCache:
    """A shared cache in a dict (the store's seam)."""

    def __init__(self) -> None:
        self.items: dict[str, bytes] = {}
        self.gets = 0

    def get(self, key: str) -> bytes | None:
        self.gets += 1
        return self.items.get(key)

    def put(self, key: str, value: bytes) -> None:
        self.items[key] = value


class CountingReader(StakesReader):
    """The shipped reader, counting its halves' passes."""

    def __init__(self) -> None:
        super().__init__(cache_size=64)
        self.passes: list[str] = []

    def _read_half(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.passes.append("read")
        return super()._read_half(*args, **kwargs)

    def _embed_rest(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.passes.append("embed")
        return super()._embed_rest(*args, **kwargs)


def whole_rows(reader: StakesReader, texts: list[str]) -> np.ndarray:
    """The one graph's rows (the graph the halves are cut from), run directly."""
    session = Int8Session(graph_path(KIND, reader._sources()))
    tokenizer = reader._load_tokenizer()
    ids, mask = pad_numpy([e.ids for e in tokenizer.encode_batch(texts)])
    return session(ids, mask).astype(np.float32)


def test_a_reading_computes_its_embedding_once_and_only_when_asked() -> None:
    calls: list[int] = []

    def embed() -> np.ndarray:
        calls.append(1)
        return np.ones(3, dtype=np.float32)

    reading = PromptReading(None, 0.7, None, embed=embed, probabilities_of=lambda v: v * 2)
    assert reading.gate == 0.7 and not reading.embedded and not reading.blank and calls == []
    rescored = reading.rescored(lambda v: v * 3)
    assert rescored.probabilities.tolist() == [3.0, 3.0, 3.0]
    assert reading.vector.tolist() == [1.0, 1.0, 1.0] and reading.embedded
    assert reading.probabilities.tolist() == [2.0, 2.0, 2.0] and calls == [1]
    assert PromptReading(np.zeros(3, dtype=np.float32), 0.0, np.zeros(2)).blank
    with pytest.raises(ValueError):
        PromptReading(None, 0.5, np.zeros(2))


@pytest.mark.slow
@shipped
def test_the_halves_give_the_one_graphs_rows_bit_for_bit() -> None:
    reader = StakesReader(cache_size=0)
    for text in PROMPTS:  # one prompt per call, as the gateway reads them
        assert np.array_equal(reader.rows([text]), whole_rows(reader, [text]))
    # a batch (int8 activations are quantised per batch: both halves see the same batch)
    assert np.array_equal(reader.rows(PROMPTS), whole_rows(reader, PROMPTS))
    # a lone prompt is tokenised with ``encode``, a batch with ``encode_batch``: the same ids,
    # truncation included (the long prompt)
    for text in [*PROMPTS, "why would my neighbour insult me again? " * 120]:
        row = whole_rows(reader, [text])[0]
        reading = StakesReader(cache_size=0).read(text)
        assert not reading.embedded
        assert np.array_equal(reading.vector, row[:DIMENSIONS])
        assert reading.gate == reader._reading(row[DIMENSIONS:], row[:DIMENSIONS]).gate
        assert np.array_equal(reading.probabilities,
                              (1 / (1 + np.exp(-row[DIMENSIONS + 1:]))).astype(np.float32))


@pytest.mark.slow
@shipped
def test_the_reader_graph_is_fused_and_still_cut_at_the_shared_bottom() -> None:
    """Export 4 fuses every layer's attention (``QAttention``) in the graph the halves are
    cut from, also the first layer of each top, though both read the shared bottom's output
    (the reader's reads a copy of its last layer norm)."""
    import onnx

    from vilmo.instruct.stakes_reader import EMBED_KIND, READ_KIND

    reader = StakesReader(cache_size=0)
    reader.rows([EVERYDAY])
    sources = reader._sources()
    counts = [Counter(n.op_type for n in onnx.load(str(graph_path(kind, sources))).graph.node)
              for kind in (KIND, READ_KIND, EMBED_KIND)]
    frozen, top = int(reader.config["n_frozen"]), 2  # all-MiniLM-L6-v2: 6 layers
    assert counts[0]["QAttention"] == frozen + 2 * top
    assert counts[1]["QAttention"] == frozen + top and counts[2]["QAttention"] == top
    assert counts[0]["Softmax"] == 0


@pytest.mark.slow
@shipped
def test_nothing_at_stake_never_runs_the_embedding_half() -> None:
    reader = CountingReader()
    generator = VilmoGenerator(PrincipleBank.load(), reader, StakesModel.load())
    generator.retriever.matrix(generator.retriever.bank.for_policy(POLICY))  # principles first
    reader.passes.clear()
    assert generator.choose(EVERYDAY, POLICY).text == ""
    assert reader.passes == ["read"]
    reader.passes.clear()
    instruction = generator.choose(REVENGE, POLICY)
    assert instruction.text and reader.passes == ["read", "embed"]
    # The same instruction as from the whole row, read in one pass.
    eager = VilmoGenerator(PrincipleBank.load(), StakesReader(cache_size=0), StakesModel.load())
    whole = whole_rows(reader, [REVENGE])[0]
    eager.read = lambda prompt: PromptReading(  # type: ignore[method-assign]
        whole[:DIMENSIONS], reader._reading(whole[DIMENSIONS:], whole[:DIMENSIONS]).gate,
        eager.retriever.stakes.probabilities(whole[:DIMENSIONS]))
    assert eager.choose(REVENGE, POLICY) == instruction
    # Read again: from the in-process cache, no pass at all.
    reader.passes.clear()
    assert generator.choose(REVENGE, POLICY) == instruction and reader.passes == []
    assert generator.choose(EVERYDAY, POLICY).text == "" and reader.passes == []


@pytest.mark.slow
@shipped
def test_a_shared_cache_keeps_the_heads_then_the_whole_row() -> None:
    cache = DictCache()
    one, two = CountingReader(), CountingReader()
    one.use_cache(cache)
    two.use_cache(cache)
    key = one.shared_key(REVENGE)
    reading = one.read(REVENGE)
    assert len(cache.items[key]) == 4 * HEADS
    assert load_vector(cache.items[key], one.width) is None  # a whole-row reader: a miss
    again = two.read(REVENGE)  # another replica: the heads from the cache, no pass
    assert two.passes == [] and again.gate == reading.gate
    assert np.array_equal(again.probabilities, reading.probabilities)
    vector = reading.vector
    stored = load_vector(cache.items[key], one.width)
    assert stored is not None and np.array_equal(stored[:DIMENSIONS], vector)
    assert np.array_equal(two.read(REVENGE).vector, vector) and two.passes == []
    assert np.array_equal(two.encode([REVENGE])[0], vector)
    # A replica holding only the heads computes the whole row when the embedding is asked for.
    three = CountingReader()
    three.use_cache(cache := DictCache())
    one_heads = StakesReader(cache_size=0)
    one_heads.use_cache(cache)
    one_heads.read(REVENGE)
    assert np.array_equal(three.read(REVENGE).vector, vector)
    assert len(cache.items[key]) == 4 * one.width


@pytest.mark.slow
@shipped
def test_warmup_cuts_the_halves_without_torch(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    reader = StakesReader(cache_size=0)
    reader.warm_up()
    whole = graph_path(KIND, reader._sources())
    monkeypatch.setenv("VILMO_CACHE_DIR", str(tmp_path))
    (tmp_path / "onnx").mkdir()
    shutil.copy(whole, tmp_path / "onnx" / whole.name)
    monkeypatch.setitem(sys.modules, "torch", None)
    fresh = StakesReader(cache_size=0)
    fresh.warm_up()
    made = sorted(p.name.split("-")[0] for p in (tmp_path / "onnx").glob("*.onnx"))
    assert made == ["stakes_reader", "stakes_reader_embed", "stakes_reader_read"]
    assert np.array_equal(fresh.rows(PROMPTS[:3]), whole_rows(reader, PROMPTS[:3]))


@pytest.mark.slow
@shipped
def test_a_graph_that_cannot_be_cut_is_served_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    import vilmo.instruct.stakes_reader as module

    def uncuttable(*args: object) -> tuple[Path, Path]:
        raise ValueError("not laid out as expected")

    monkeypatch.setattr(module, "split_graph", uncuttable)
    from vilmo.judge import value_onnx

    real = value_onnx.graph_path  # no halves cached: they would be cut now
    monkeypatch.setattr(value_onnx, "graph_path", lambda kind, sources, quantized=True,
                        outputs="": (real(kind, sources, quantized, outputs) if kind == KIND
                                     else Path("/nonexistent") / kind))
    reader = StakesReader(cache_size=0)
    reading = reader.read(REVENGE)
    assert reader._whole and reading.embedded
    assert np.array_equal(reader.rows([REVENGE]), whole_rows(StakesReader(), [REVENGE]))


def test_prepare_embeds_a_policys_principles_before_its_first_request() -> None:
    """The gateway's warm-up prompt has no value at stake, so the first request with one
    embedded the policy's principles (about 0.4 s for ``default``): ``prepare`` does it at
    start-up, once; a policy on another generator has nothing to prepare."""
    from generator_fakes import TableEncoder, small_bank

    class CountingEncoder(TableEncoder):
        def __init__(self) -> None:
            super().__init__()
            self.encoded: list[str] = []

        def encode(self, texts: Sequence[str]) -> Matrix:
            self.encoded += texts
            return super().encode(texts)

    encoder = CountingEncoder()
    generator = VilmoGenerator(small_bank(), encoder, StakesModel.load())
    generator.prepare(POLICY)
    pool = generator.retriever.bank.for_policy(POLICY)
    assert sorted(encoder.encoded) == sorted(p.text for p in pool) and pool
    encoder.encoded.clear()
    generator.retriever.matrix(pool)
    generator.prepare(POLICY.model_copy(update={"name": "again"}))
    relevance = Policy.model_validate({"name": "r", "values": {"mft.fairness": {}},
                                       "instructions": {"generator": "relevance"}})
    generator.prepare(relevance)
    assert encoder.encoded == []


def test_a_heads_only_hit_is_looked_up_once_when_the_embedding_is_asked_for() -> None:
    """The store counts every lookup in ``vilmo_cache_requests_total``: looking the text up
    again, to find the same heads-only row, counted one hit as two."""
    cache = DictCache()
    one, two = CountingReader(), CountingReader()
    one.use_cache(cache)
    two.use_cache(cache)
    one.read(REVENGE)  # the heads only
    cache.gets = 0
    vector = two.read(REVENGE).vector
    assert cache.gets == 1 and vector is not None
    assert load_vector(cache.items[one.shared_key(REVENGE)], one.width) is not None


@pytest.mark.slow
@shipped
def test_an_unwritable_cache_finds_the_halves_in_the_private_fallback(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the cache folder cannot be written the halves are cut into this user's private
    temporary folder, but the reader looked for them only in the cache folder: every start
    rebuilt the whole graph with torch and cut it again."""
    import tempfile

    from vilmo.instruct.stakes_reader import EMBED_KIND, READ_KIND
    from vilmo.judge.graph_files import write_cached

    reader = StakesReader(cache_size=0)
    reader.warm_up()
    sources = reader._sources()
    expected = whole_rows(reader, PROMPTS[:3])
    (tmp_path / "blocked").write_text("a file where the cache folder should be")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    for kind in (READ_KIND, EMBED_KIND):
        half = graph_path(kind, sources)
        write_cached(tmp_path / "blocked" / "onnx" / half.name,
                     lambda p, half=half: shutil.copyfile(half, p))  # type: ignore[misc]
    monkeypatch.setenv("VILMO_CACHE_DIR", str(tmp_path / "blocked" / "cache"))
    monkeypatch.setitem(sys.modules, "torch", None)
    fresh = StakesReader(cache_size=0)

    def network() -> object:
        raise AssertionError("the whole graph was built again though its halves are cached")

    monkeypatch.setattr(fresh, "_network", network)
    assert np.array_equal(fresh.rows(PROMPTS[:3]), expected)
    assert fresh._halves is not None and not fresh._whole
