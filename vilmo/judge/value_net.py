"""The cross-encoder network: packaged MiniLM, fine-tuned top layers, one linear head.

The encoder reads ``[CLS] prompt [SEP] reply [SEP]`` (one segment type, as the sentence encoder
was trained) so it can judge the reply's stance towards the request. Only the top layers and
the head are trained; the bottom layers stay the packaged weights, which lets training cache
their output once and lets the committed file hold only what changed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from transformers import BertModel, PreTrainedTokenizerBase


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """How a (prompt, reply) pair becomes token windows."""

    max_length: int = 256
    prompt_tokens: int = 64
    stride_fraction: float = 0.75
    fine_length: int | None = None
    """When a reply needs several windows, the classifier also reads it in windows of this many
    tokens (see ``vilmo.judge.value_model``): in a long window a short violation is diluted."""
    max_spans: int = 16
    """A reply of two or more sentences is also read sentence by sentence, each after the
    prompt (``sentence_spans``), in at most this many spans (0: not at all): one harmful
    sentence in otherwise benign advice is diluted even in a short window."""
    span_min_words: int = 6
    """A sentence of fewer words is read together with its neighbour."""
    span_prompt: bool = True
    """Read each sentence after the prompt (True) or alone, as a plain text (False)."""
    span_ignores: tuple[str, ...] = ("harm", "content")
    """Heads a sentence does not speak for (read as 0 on sentence spans), besides the
    whole-text heads other than ``cm``: ``harm`` (whether the *reply* goes along with a harmful
    request: one sentence cut out of a refusal cannot say) and ``content`` (both read single
    sentences of benign texts high; chosen on dev, issue 17). A sentence then speaks through
    ``cm``: whether the act it describes is wrong."""


def windows(tokenizer: PreTrainedTokenizerBase, prompt: str | None, response: str,
            spec: WindowSpec, limit: int | None = None) -> list[list[int]]:
    """Token-id windows covering the whole reply, each led by the (truncated) prompt.

    A long reply is cut into overlapping windows so a violation at its end is read in full;
    ``limit`` keeps only the first windows (training reads one).
    """
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    head = [cls]
    if prompt:
        head += tokenizer.encode(prompt, add_special_tokens=False)[: spec.prompt_tokens] + [sep]
    body = tokenizer.encode(response, add_special_tokens=False)
    return _cut(head, body, sep, spec.max_length, spec.stride_fraction, limit)


_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\s*\n+\s*")


def sentence_spans(text: str, min_words: int = 6, max_spans: int = 16) -> list[str]:
    """``text`` cut at sentence ends and line breaks into at most ``max_spans`` spans: a piece
    under ``min_words`` words joins the next one (the last joins the previous), and when there
    are more pieces than ``max_spans`` neighbours are joined evenly, so every word is in one
    span and the number of spans stays bounded."""
    pieces = [p for p in (q.strip() for q in _SENTENCE_END.split(text)) if p]
    merged: list[str] = []
    buffer = ""
    for piece in pieces:
        buffer = f"{buffer} {piece}" if buffer else piece
        if len(buffer.split()) >= min_words:
            merged.append(buffer)
            buffer = ""
    if buffer:
        if merged:
            merged[-1] = f"{merged[-1]} {buffer}"
        else:
            merged.append(buffer)
    if max_spans <= 0 or len(merged) <= max_spans:
        return merged
    size = -(-len(merged) // max_spans)
    return [" ".join(merged[i:i + size]) for i in range(0, len(merged), size)]


def span_windows(tokenizer: PreTrainedTokenizerBase, prompt: str | None, spans: Sequence[str],
                 spec: WindowSpec) -> list[list[int]]:
    """Token windows for each span of a reply, each led by the (truncated) prompt; a span
    longer than ``spec.fine_length`` (else ``max_length``) tokens is cut as ``windows`` cuts."""
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    head = [cls]
    if prompt:
        head += tokenizer.encode(prompt, add_special_tokens=False)[: spec.prompt_tokens] + [sep]
    length = spec.fine_length or spec.max_length
    return [row for span in spans
            for row in _cut(head, tokenizer.encode(span, add_special_tokens=False), sep, length,
                            spec.stride_fraction, None)]


def _cut(head: list[int], body: list[int], sep: int, length: int, stride: float,
         limit: int | None) -> list[list[int]]:
    room = max(1, length - len(head) - 1)
    step = max(1, int(room * stride))
    out = []
    start = 0
    while True:
        out.append(head + body[start:start + room] + [sep])
        if start + room >= len(body) or (limit and len(out) >= limit):
            return out
        start += step


def pad(batch: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and the 0/1 attention mask."""
    width = max(len(ids) for ids in batch)
    ids = torch.zeros((len(batch), width), dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, row in enumerate(batch):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return ((1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min).to(dtype)


class ValueNet(nn.Module):
    """MiniLM split at ``n_frozen``: lower layers (fixed), upper layers + head (trained)."""

    def __init__(self, bert: BertModel, n_outputs: int, n_frozen: int = 4) -> None:
        super().__init__()
        self.bert = bert
        self.n_frozen = n_frozen
        self.head = nn.Linear(bert.config.hidden_size, n_outputs)

    def lower(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Hidden states after the frozen layers."""
        hidden = self.bert.embeddings(input_ids=ids, token_type_ids=torch.zeros_like(ids))
        add = _additive(mask, hidden.dtype)
        for layer in self.bert.encoder.layer[: self.n_frozen]:
            hidden = _run(layer, hidden, add)
        out: torch.Tensor = hidden
        return out

    def upper(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Logits from the frozen layers' output: trained layers, mean pooling, head."""
        add = _additive(mask, hidden.dtype)
        for layer in self.bert.encoder.layer[self.n_frozen:]:
            hidden = _run(layer, hidden, add)
        weights = mask.to(hidden.dtype).unsqueeze(-1)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        out: torch.Tensor = self.head(pooled)
        return out

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.upper(self.lower(ids, mask), mask)

    def trained_state(self) -> dict[str, torch.Tensor]:
        """Only what training changed (top layers and head), packed for committing."""
        keep = tuple(f"bert.encoder.layer.{i}." for i in
                     range(self.n_frozen, len(self.bert.encoder.layer))) + ("head.",)
        return pack({k: v.detach() for k, v in self.state_dict().items() if k.startswith(keep)})


SCALE_SUFFIX = ".row_scale"


def pack(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weight matrices as int8 with one fp32 scale per row, the rest fp16: half the size of
    fp16, and the shipped path runs int8 linear layers anyway."""
    out = {}
    for key, value in state.items():
        if value.dim() == 2:
            scale = value.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127.0
            out[key] = torch.round(value / scale).to(torch.int8).contiguous()
            out[key + SCALE_SUFFIX] = scale.squeeze(1).float().contiguous()
        else:
            out[key] = value.to(torch.float16).contiguous()
    return out


def unpack(stored: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """fp32 tensors from ``pack``'s output (plain fp16 tensors load as they are)."""
    out = {}
    for key, value in stored.items():
        if key.endswith(SCALE_SUFFIX):
            continue
        scale = stored.get(key + SCALE_SUFFIX)
        out[key] = value.float() * scale[:, None] if scale is not None else value.float()
    return out


def _run(layer: nn.Module, hidden: torch.Tensor, add: torch.Tensor) -> torch.Tensor:
    out: Any = layer(hidden, attention_mask=add)
    result: torch.Tensor = out[0] if isinstance(out, tuple) else out
    return result


def load_base(path: str | Path) -> tuple[BertModel, PreTrainedTokenizerBase]:
    """The packaged encoder and tokenizer, from local files only."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    tokenizer.model_max_length = 1 << 30  # windows() cuts texts itself
    bert = AutoModel.from_pretrained(str(path), local_files_only=True,
                                     attn_implementation="sdpa")
    return bert, tokenizer
