"""The request reader tokenizes at most ``READ_CHARS`` of a text: the tokenizer keeps its first
``MAX_TOKENS`` tokens (truncation on), but it read the whole text first, a 420 KB prompt every
time. The reading is the same as before: the first ``MAX_TOKENS`` tokens are the same. Uses
the shipped reader."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from vilmo.instruct.stakes_reader import READ_CHARS, StakesReader, default_reader_dir
from vilmo.judge.embedder import MAX_TOKENS

pytestmark = pytest.mark.skipif(not (default_reader_dir() / "weights.safetensors").exists(),
                                reason="no reader weights in vilmo/models/stakes_reader")


class SpyTokenizer:
    """The reader's tokenizer, recording the length of every text it is given."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.lengths: list[int] = []

    def encode(self, text: str) -> Any:
        self.lengths.append(len(text))
        return self.tokenizer.encode(text)

    def encode_batch(self, texts: list[str]) -> Any:
        self.lengths += [len(t) for t in texts]
        return self.tokenizer.encode_batch(texts)


def test_a_long_prompt_is_cut_before_it_is_tokenized(real_models: None) -> None:
    reader = StakesReader()
    halves = reader._split()
    if halves is None:
        pytest.skip("the reader's graph is served whole here")
    assert halves[2].truncation is not None and halves[2].truncation["max_length"] == MAX_TOKENS
    spy = SpyTokenizer(halves[2])
    reader._halves = (halves[0], halves[1], spy)  # type: ignore[assignment]
    question = "My coworker humiliated me in front of everyone. How do I get revenge on him? "
    long_prompt = question * (5 * READ_CHARS // len(question))
    cut = long_prompt[:READ_CHARS]
    long_reading, cut_reading = reader.read(long_prompt), reader.read(cut)
    reader.bottom(long_prompt)
    reader.encode([long_prompt + " again", cut + " again"])
    assert spy.lengths and max(spy.lengths) <= READ_CHARS, spy.lengths
    assert long_reading.gate == cut_reading.gate
    assert np.array_equal(long_reading.vector, cut_reading.vector)
