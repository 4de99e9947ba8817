"""The cross-encoder network: packaged MiniLM, fine-tuned top layers, one linear head.

The encoder reads ``[CLS] prompt [SEP] reply [SEP]`` (one segment type, as the sentence encoder
was trained) so it can judge the reply's stance towards the request. Only the top layers and
the head are trained; the bottom layers stay the packaged weights, which lets training cache
their output once and lets the committed file hold only what changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from vilmo.judge.windowing import WindowSpec, sentence_spans, span_windows, windows
from vilmo.types import Matrix

__all__ = ["TokenLogitsNet", "TorchNetwork", "ValueNet", "WindowSpec", "fp32_network",
           "load_base", "pack", "pad", "sentence_spans", "span_windows", "unpack", "windows"]

if TYPE_CHECKING:
    from transformers import BertModel, PreTrainedTokenizerBase


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

    def top(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The last layer's hidden states from the frozen layers' output (trained layers)."""
        add = _additive(mask, hidden.dtype)
        for layer in self.bert.encoder.layer[self.n_frozen:]:
            hidden = _run(layer, hidden, add)
        return hidden

    def pooled_head(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Logits of the last layer's states: mean pooling over the mask, head."""
        weights = mask.to(hidden.dtype).unsqueeze(-1)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        out: torch.Tensor = self.head(pooled)
        return out

    def upper(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Logits from the frozen layers' output: trained layers, mean pooling, head."""
        return self.pooled_head(self.top(hidden, mask), mask)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.upper(self.lower(ids, mask), mask)

    def trained_state(self) -> dict[str, torch.Tensor]:
        """Only what training changed (top layers and head), packed for committing."""
        keep = tuple(f"bert.encoder.layer.{i}." for i in
                     range(self.n_frozen, len(self.bert.encoder.layer))) + ("head.",)
        return pack({k: v.detach() for k, v in self.state_dict().items() if k.startswith(keep)})


class TokenLogitsNet(nn.Module):
    """A ``ValueNet`` that also gives the head applied to each token's last hidden state
    (``token_logits``: rows, tokens, heads), as the served graph's second output. The head is
    linear, so the mean of a stretch's token logits is the head applied to the stretch's mean
    state: a sentence span is read inside its whole window by pooling its own tokens'
    logits (``window.span_reading`` "pooled", ``vilmo.judge.span_reading``), without a row of
    its own. ``logits`` stays what ``ValueNet`` gives."""

    onnx_outputs = ("logits", "token_logits")

    def __init__(self, net: ValueNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.net.top(self.net.lower(ids, mask), mask)
        return self.net.pooled_head(hidden, mask), self.net.head(hidden)


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


def fp32_network(config: dict[str, Any], encoder_path: Path, weights: Path) -> ValueNet:
    """The fp32 PyTorch network (packaged encoder + committed layers), to export or run."""
    from safetensors.torch import load_file

    bert, _ = load_base(encoder_path)
    fp32 = ValueNet(bert, len(config["heads"]), config["n_frozen"])
    missing = fp32.load_state_dict(unpack(load_file(str(weights))), strict=False)
    if missing.unexpected_keys:
        raise ValueError(f"unexpected weights: {missing.unexpected_keys[:3]}")
    return fp32.eval()


class TorchNetwork:
    """The fp32 PyTorch network behind the same calls as the int8 graph (the reference)."""

    def __init__(self, net: ValueNet) -> None:
        self.net = TokenLogitsNet(net)

    def __call__(self, ids: npt.NDArray[np.int64], mask: npt.NDArray[np.int64]) -> Matrix:
        return self.outputs(ids, mask)[0]

    def outputs(self, ids: npt.NDArray[np.int64], mask: npt.NDArray[np.int64]) -> list[Matrix]:
        """The pooled logits and the token logits, as ``Int8Session.outputs`` gives them."""
        with torch.inference_mode():
            both = self.net(torch.from_numpy(ids), torch.from_numpy(mask))
        return [t.float().numpy() for t in both]
