"""How a (prompt, reply) pair becomes token windows for the value classifier, without torch:
the serving path (``vilmo.judge.value_model``) runs on numpy, tokenizers and onnxruntime only.

``WordPieceTokenizer`` reads the packaged encoder's ``tokenizer.json`` with the `tokenizers`
library: the same ids as transformers' fast tokenizer, without importing transformers.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt


class WindowTokenizer(Protocol):
    """What ``windows`` needs of a tokenizer (transformers' tokenizers have it too)."""

    @property
    def cls_token_id(self) -> int: ...

    @property
    def sep_token_id(self) -> int: ...

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...


_SURROGATE = re.compile(r"[\ud800-\udfff]")


def tokenizable(text: str) -> str:
    """``text`` with each lone UTF-16 surrogate (legal in JSON, ``"\\ud800"``, but not in
    UTF-8) replaced by U+FFFD: `tokenizers` refuses such a string, and one odd reply must not
    fail the judge. One character for one, so token offsets still index ``text``."""
    return _SURROGATE.sub("\ufffd", text)


class WordPieceTokenizer:
    """A BERT-family ``tokenizer.json`` through `tokenizers`: no padding, no truncation
    (``windows`` cuts texts itself)."""

    def __init__(self, folder: str | Path) -> None:
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        cls, sep = self._tokenizer.token_to_id("[CLS]"), self._tokenizer.token_to_id("[SEP]")
        if cls is None or sep is None:
            raise ValueError(f"{folder}: the tokenizer has no [CLS] or [SEP] token")
        self.cls_token_id, self.sep_token_id = int(cls), int(sep)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        ids: list[int] = self._tokenizer.encode(
            tokenizable(text), add_special_tokens=add_special_tokens).ids
        return ids

    def encode_tokens(self, text: str) -> TextTokens:
        """The ids of ``text`` (no special tokens) with where each token starts in it."""
        encoding = self._tokenizer.encode(tokenizable(text), add_special_tokens=False)
        return TextTokens(encoding.ids, [start for start, _ in encoding.offsets])


@dataclass(frozen=True, slots=True)
class TextTokens:
    """A text tokenised once: its ids and each token's first character, so that the tokens of
    a stretch of it (a sentence span, ``span_ids``) are a slice instead of a second encoding."""

    ids: list[int]
    starts: list[int]

    def within(self, start: int, end: int) -> list[int]:
        """The tokens of ``text[start:end]`` when the stretch begins and ends at token
        boundaries (whitespace around it, as around ``sentence_span_ranges``' pieces)."""
        return self.ids[bisect_left(self.starts, start):bisect_left(self.starts, end)]

    def stretch(self, span: Span) -> tuple[int, int]:
        """The token positions ``[first, end)`` from a span's first piece to its last: its
        tokens in the text, with any between its pieces (a closing quote the sentence cut
        left out of both)."""
        return bisect_left(self.starts, span[0][0]), bisect_left(self.starts, span[-1][1])


SPAN_READINGS = ("rows", "pooled", "ranked")
WHOLE_POOLINGS = ("all", "reply")


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
    span_reading: str = "rows"
    """How a sentence span is read (``vilmo.judge.window_rows``): "rows", each in a row of its
    own after the prompt head; "pooled", inside the reply's whole window after the prompt, from
    its own tokens' logits (no extra rows); "ranked", the spans ranked by their pooled reading
    and, if the first scores at least ``span_gate``, the first ``span_rows`` of them read in
    rows of their own."""
    span_rows: int = 16
    """With "ranked": how many spans of a reply are read in rows."""
    span_gate: float = 0.0
    """With "ranked": the lowest pooled reading (a span's highest composed violation
    probability) of a reply's highest span for which its spans are read in rows; chosen on
    dev for the weights it ships with (model card), so a newly trained config reads "rows"."""
    alone_weight: float = 0.0
    """A reply after a prompt is also read alone (its windows without the prompt), and its
    whole reading is ``(1 - alone_weight)`` of the reading after the prompt plus
    ``alone_weight`` of the reading alone (0: not read alone; ``vilmo.judge.pooling.mix_alone``).
    After a vicious prompt the prompt dominated the reading (issue 17)."""
    whole_pooling: str = "all"
    """How a reply's whole window after its prompt is pooled: "all", the mean over every token
    (prompt head included: the graph's ``logits``); "reply", ``reply_weight`` of the mean
    token logit over the reply's own tokens (they still attend to the prompt) plus the rest of
    the all-token mean, so the prompt cannot dominate (``vilmo.judge.window_rows.reply_pooled``).
    A plain text, a window read alone and the Platt fit (``pooled_logits``) always pool "all"."""
    reply_weight: float = 1.0
    """With ``whole_pooling`` "reply": the weight of the reply tokens' mean (1: it alone)."""

    def __post_init__(self) -> None:
        if self.span_reading not in SPAN_READINGS:
            raise ValueError(f"window.span_reading must be one of {SPAN_READINGS}, "
                             f"not {self.span_reading!r}")
        if not 0.0 <= self.alone_weight <= 1.0:
            raise ValueError(f"window.alone_weight must be within [0, 1], not {self.alone_weight}")
        if self.whole_pooling not in WHOLE_POOLINGS:
            raise ValueError(f"window.whole_pooling must be one of {WHOLE_POOLINGS}, "
                             f"not {self.whole_pooling!r}")
        if not 0.0 <= self.reply_weight <= 1.0:
            raise ValueError(f"window.reply_weight must be within [0, 1], not {self.reply_weight}")


def windows(tokenizer: WindowTokenizer, prompt: str | None, response: str,
            spec: WindowSpec, limit: int | None = None) -> list[list[int]]:
    """Token-id windows covering the whole reply, each led by the (truncated) prompt.

    A long reply is cut into overlapping windows so a violation at its end is read in full;
    ``limit`` keeps only the first windows (training reads one).
    """
    body = tokenizer.encode(response, add_special_tokens=False)
    return cut(prompt_head(tokenizer, prompt, spec), body, tokenizer.sep_token_id,
               spec.max_length, spec.stride_fraction, limit)


def prompt_head(tokenizer: WindowTokenizer, prompt: str | None, spec: WindowSpec) -> list[int]:
    """What leads each window: ``[CLS]``, and the prompt's first ``spec.prompt_tokens`` tokens
    and ``[SEP]`` when there is a prompt: one that tokenises to nothing (blank, zero-width
    characters) is none, as ``vilmo.judge.classifier.given_prompt`` decides at serving."""
    ids = tokenizer.encode(prompt, add_special_tokens=False) if prompt else []
    if not ids:
        return [tokenizer.cls_token_id]
    return [tokenizer.cls_token_id, *ids[: spec.prompt_tokens], tokenizer.sep_token_id]


_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\s*\n+\s*")


Span = list[tuple[int, int]]
"""A sentence span as the character ranges of its pieces in the text (joined by one space)."""


def sentence_spans(text: str, min_words: int = 6, max_spans: int = 16) -> list[str]:
    """``text`` cut at sentence ends and line breaks into at most ``max_spans`` spans: a piece
    under ``min_words`` words joins the next one (the last joins the previous), and when there
    are more pieces than ``max_spans`` neighbours are joined evenly, so every word is in one
    span and the number of spans stays bounded."""
    return [" ".join(text[a:b] for a, b in span)
            for span in sentence_span_ranges(text, min_words, max_spans)]


def sentence_span_ranges(text: str, min_words: int = 6, max_spans: int = 16) -> list[Span]:
    """``sentence_spans`` as ranges of ``text``: each span's pieces (the text between sentence
    ends and line breaks, without the whitespace around), so their tokens can be sliced from
    the text's (``span_ids``)."""
    pieces: list[tuple[int, int]] = []
    start = 0
    for end, after in [*((m.start(), m.end()) for m in _SENTENCE_END.finditer(text)),
                       (len(text), len(text))]:
        piece = text[start:end]
        stripped = piece.strip()
        if stripped:
            first = start + len(piece) - len(piece.lstrip())
            pieces.append((first, first + len(stripped)))
        start = after
    merged: list[Span] = []
    buffer: Span = []
    words = 0
    for a, b in pieces:
        buffer.append((a, b))
        words += len(text[a:b].split())
        if words >= min_words:
            merged.append(buffer)
            buffer, words = [], 0
    if buffer:
        if merged:
            merged[-1] += buffer
        else:
            merged.append(buffer)
    if max_spans <= 0 or len(merged) <= max_spans:
        return merged
    size = -(-len(merged) // max_spans)
    return [[piece for span in merged[i:i + size] for piece in span]
            for i in range(0, len(merged), size)]


def span_ids(tokens: TextTokens, spans: Sequence[Span]) -> list[list[int]]:
    """Each span's token ids, sliced from its text's (``TextTokens``): the same ids as
    encoding the span's string, since a WordPiece (BERT) tokenizer splits at the whitespace
    and punctuation that bound every piece, and joining pieces with a space splits them
    there too (tests/vilmo/test_windowing.py compares the two on the shared data's texts)."""
    return [[t for a, b in span for t in tokens.within(a, b)] for span in spans]


def span_windows(tokenizer: WindowTokenizer, prompt: str | None, spans: Sequence[str],
                 spec: WindowSpec) -> list[list[int]]:
    """Token windows for each span of a reply, each led by the (truncated) prompt; a span
    longer than ``spec.fine_length`` (else ``max_length``) tokens is cut as ``windows`` cuts."""
    return span_rows(prompt_head(tokenizer, prompt, spec),
                     [tokenizer.encode(span, add_special_tokens=False) for span in spans],
                     tokenizer.sep_token_id, spec)


def span_rows(head: list[int], bodies: Sequence[list[int]], sep: int,
              spec: WindowSpec) -> list[list[int]]:
    """``span_windows`` of spans already tokenised (``bodies``) after ``head``."""
    length = spec.fine_length or spec.max_length
    return [row for body in bodies
            for row in cut(head, body, sep, length, spec.stride_fraction)]


def cut(head: list[int], body: list[int], sep: int, length: int, stride: float,
        limit: int | None = None) -> list[list[int]]:
    """Windows of at most ``length`` tokens, each ``head``, a stretch of ``body`` and
    ``sep``, overlapping so that a stretch advances by ``stride`` of the room; ``limit`` keeps
    the first ones."""
    starts, room = window_starts(len(head), len(body), length, stride, limit)
    return [head + body[start:start + room] + [sep] for start in starts]


def window_starts(head: int, body: int, length: int, stride: float,
                  limit: int | None = None) -> tuple[list[int], int]:
    """Where in the body each of ``cut``'s windows starts, and how many body tokens a window
    holds (its room), for a head of ``head`` tokens and a body of ``body``."""
    room = max(1, length - head - 1)
    step = max(1, int(room * stride))
    starts = [0]
    while starts[-1] + room < body and not (limit and len(starts) >= limit):
        starts.append(starts[-1] + step)
    return starts, room


def pad_numpy(batch: Sequence[Sequence[int]]
              ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Right-padded ids and the 0/1 attention mask, as int64 arrays (what the graph reads)."""
    width = max(len(ids) for ids in batch)
    ids = np.zeros((len(batch), width), dtype=np.int64)
    mask = np.zeros((len(batch), width), dtype=np.int64)
    for i, row in enumerate(batch):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return ids, mask
