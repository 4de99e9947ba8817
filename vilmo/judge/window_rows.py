"""Which token rows the value classifier runs for each text, and where a sentence span is read.

A text's rows: its whole windows after the prompt head, fine windows for a long reply, windows
read alone (without the prompt) and, for a reply of two or more sentences, its sentence spans.
A span is read one of two ways (``WindowSpec.span_reading``):

* "rows": one row per span, ``head + span + [SEP]`` (the shipped reading up to issue 16);
* "ranked": read "pooled" first, then, for a reply whose highest span reads at least
  ``span_gate``, its ``span_rows`` spans that read highest read again as "rows", and only
  those rows kept (a reply below the gate has no sentence reading): the pooled reading
  ranks a violent sentence in benign advice first but reads it lower than benign sentences
  read alone (issue 16), so it chooses the rows to run and the rows read them;
* "pooled": no row of its own. The head is one linear layer over the mean of the last hidden
  states, so the mean of a stretch's per-token logits (the graph's ``token_logits``) is the
  head applied to the stretch's mean state: the span's reading is the mean token logit over
  its own tokens inside a whole window, where it is read after the prompt and in the context
  of the reply around it. A span is read in the whole window that holds most of its tokens
  (the first on a tie), over the tokens that window holds: with windows overlapping by a
  quarter of their room, a span of up to ~45 tokens always lies whole in one window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from vilmo.judge.classifier import ScoreInput, given_prompt
from vilmo.types import Matrix

if TYPE_CHECKING:
    from vilmo.judge.windowing import WindowSpec, WordPieceTokenizer

WHOLE, FINE, SENTENCE, ALONE, ALONE_FINE = 0, 1, 2, 3, 4
"""Kinds of window: the whole reply's, a short cut of a long reply, one sentence span, and
the first two read without the prompt (``WindowSpec.alone_weight``)."""


@dataclass(frozen=True, slots=True)
class SpanPlace:
    """A sentence span read inside a whole window: that window's row, and the positions
    ``[first, end)`` of the span's tokens in it."""

    item: int
    row: int
    first: int
    end: int
    head: int = 0
    """The row's first positions pooled with the span (its head: ``[CLS]``, prompt,
    ``[SEP]``, as a span's own row pools them); 0: the span's tokens alone."""


POOL_HEAD = False
"""Pool a span with its window's head (``SpanPlace.head``)."""


@dataclass(slots=True)
class WindowRows:
    """The rows to run, each row's text (``owner``) and kind, and the pooled spans."""

    rows: list[list[int]] = field(default_factory=list)
    owner: list[int] = field(default_factory=list)
    kind: list[int] = field(default_factory=list)
    places: list[SpanPlace] = field(default_factory=list)
    span_rows: list[list[list[int]]] = field(default_factory=list)
    """With "ranked": each place's own rows (``span_rows``), run only if it is chosen."""
    prompted: dict[int, int] = field(default_factory=dict)
    """Whole and fine windows after a prompt, by row: their head's length (``reply_pooled``)."""

    def add(self, item: int, of_kind: int, windows: list[list[int]], head: int = 0) -> int:
        if head > 1:
            self.prompted |= {len(self.rows) + k: head for k in range(len(windows))}
        self.rows.extend(windows)
        self.owner.extend([item] * len(windows))
        self.kind.extend([of_kind] * len(windows))
        return len(windows)


def window_rows(tokenizer: WordPieceTokenizer, spec: WindowSpec, items: Sequence[ScoreInput],
                sentences: bool, alone: bool) -> WindowRows:
    """Every text's rows (module doc); each reply and prompt is tokenised once for every kind
    of window (a span's tokens are a slice of its reply's, ``vilmo.judge.windowing.span_ids``)."""
    from vilmo.judge.windowing import (
        cut,
        prompt_head,
        sentence_span_ranges,
        span_ids,
        span_rows,
        window_starts,
    )

    sep = tokenizer.sep_token_id
    out = WindowRows()
    for i, item in enumerate(items):
        prompt = given_prompt(item.prompt)
        tokens = tokenizer.encode_tokens(item.response)
        head = prompt_head(tokenizer, prompt, spec)
        first_whole = len(out.rows)
        coarse = out.add(i, WHOLE, cut(head, tokens.ids, sep, spec.max_length,
                                       spec.stride_fraction), len(head))
        if spec.fine_length and coarse > 1:
            out.add(i, FINE, cut(head, tokens.ids, sep, spec.fine_length, spec.stride_fraction),
                    len(head))
        ranges = (sentence_span_ranges(item.response, spec.span_min_words, spec.max_spans)
                  if sentences and spec.max_spans else [])
        if len(ranges) > 1 and spec.span_reading != "rows":
            starts, room = window_starts(len(head), len(tokens.ids), spec.max_length,
                                         spec.stride_fraction)
            stretches = [tokens.stretch(r) for r in ranges]
            read = [k for k, (a, b) in enumerate(stretches) if b > a]
            out.places.extend(span_places(i, first_whole, len(head), starts, room,
                                          [stretches[k] for k in read]))
            if spec.span_reading == "ranked":
                bodies = span_ids(tokens, ranges)
                span_head = head if spec.span_prompt else head[:1]
                out.span_rows.extend(span_rows(span_head, [bodies[k]], sep, spec) for k in read)
        elif len(ranges) > 1:
            out.add(i, SENTENCE, span_rows(head if spec.span_prompt else head[:1],
                                           span_ids(tokens, ranges), sep, spec))
        if alone and prompt and spec.alone_weight > 0:
            bare = out.add(i, ALONE, cut(head[:1], tokens.ids, sep, spec.max_length,
                                         spec.stride_fraction))
            if spec.fine_length and bare > 1:
                out.add(i, ALONE_FINE, cut(head[:1], tokens.ids, sep, spec.fine_length,
                                           spec.stride_fraction))
    return out


def span_places(item: int, first_row: int, head: int, starts: Sequence[int], room: int,
                stretches: Sequence[tuple[int, int]]) -> list[SpanPlace]:
    """Where each span (its token stretch in the reply) is read: the whole window (rows from
    ``first_row``, body starting at ``starts``, ``room`` body tokens each, after ``head``
    tokens) holding most of it, the first on a tie; a span without tokens is not read."""
    places = []
    for a, b in stretches:
        overlaps = [min(b, s + room) - max(a, s) for s in starts]
        best = int(np.argmax(overlaps))
        if b <= a or overlaps[best] <= 0:
            continue
        s = starts[best]
        places.append(SpanPlace(item, first_row + best, head + max(a, s) - s,
                                head + min(b, s + room) - s, head if POOL_HEAD else 0))
    return places


def ranked_spans(places: Sequence[SpanPlace], scores: Matrix, keep: int,
                 gate: float) -> list[int]:
    """The places read again in rows ("ranked"): of each text whose highest score reaches
    ``gate``, its ``keep`` places of the highest ``scores`` (the earlier on a tie), in their
    order; none of a text below the gate."""
    by_item: dict[int, list[int]] = {}
    for k, place in enumerate(places):
        by_item.setdefault(place.item, []).append(k)
    chosen = [k for ks in by_item.values() if max(float(scores[k]) for k in ks) >= gate
              for k in sorted(ks, key=lambda k: (-float(scores[k]), k))[:keep]]
    return sorted(chosen)


def pooled_spans(token_logits: dict[int, Matrix], places: Sequence[SpanPlace],
                 n_heads: int) -> Matrix:
    """Each place's logits: the mean of its tokens' logits in its row (``token_logits`` by
    row: tokens by heads)."""
    out = np.zeros((len(places), n_heads), dtype=np.float32)
    for k, place in enumerate(places):
        row = token_logits[place.row]
        out[k] = np.concatenate([row[:place.head], row[place.first:place.end]]).mean(axis=0)
    return out


def reply_pooled(logits: Matrix, token_logits: dict[int, Matrix], rows: Sequence[list[int]],
                 prompted: dict[int, int], weight: float) -> Matrix:
    """``WindowSpec.whole_pooling`` "reply": each window after a prompt (``prompted``: row to
    head length) read as ``weight`` of the mean token logit over its reply tokens (between the
    head and the closing ``[SEP]``) plus ``1 - weight`` of its all-token logits; other rows,
    and a window with no reply token, as they are. The head is linear, so this is the head on
    a mean state that gives the prompt at most ``1 - weight`` of its all-token share."""
    out = logits.copy()
    for row, head in prompted.items():
        end = len(rows[row]) - 1
        if end > head:
            reply = token_logits[row][head:end].mean(axis=0)
            out[row] = weight * reply + (1.0 - weight) * logits[row]
    return out
