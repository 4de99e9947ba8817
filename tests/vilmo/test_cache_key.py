"""``cache_key``: the in-process caches' key for a text of any length (embedder rows, the
request reader's rows, the instruction generator's instructions)."""

from __future__ import annotations

import hashlib

import numpy as np

from vilmo.judge.embedder import _LruCache, cache_key


def test_a_short_text_never_takes_a_long_texts_key() -> None:
    """A text of 256 characters or fewer was its own key and a longer one ``sha256:<hex>``:
    a client prompt reading literally ``sha256:<hex of P>`` took long prompt P's key, and
    was answered with P's cached embedding or instruction (and could plant one for P)."""
    for long in ("x" * 300, "Tell me about bread. " * 5000, "é" * 257):
        digest = hashlib.sha256(long.encode("utf-8")).hexdigest()
        assert cache_key(long) != cache_key("sha256:" + digest)
        assert cache_key(long) != cache_key(cache_key(long))
        assert len(cache_key(long)) < 300
    assert cache_key("x" * 256) != cache_key("x" * 257)
    assert cache_key("How do I bake bread?") == cache_key("How do I bake bread?")


def test_a_prompt_spelling_a_digest_misses_the_long_prompts_row() -> None:
    cache = _LruCache(8)
    long = "x" * 300
    cache.put(long, np.ones(3, dtype=np.float32))
    spelled = "sha256:" + hashlib.sha256(long.encode("utf-8")).hexdigest()
    assert cache.get(spelled) is None
    cache.put(spelled, np.zeros(3, dtype=np.float32))
    found = cache.get(long)
    assert found is not None and found.tolist() == [1.0, 1.0, 1.0]
