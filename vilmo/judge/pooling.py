"""How the value classifier's window rows become one reading per text: length-sorted batches
of one text's rows each, max and mean pooling over a text's rows, the mix of a reply's two
whole readings (after its prompt and alone), and the rescaling at each value's operating
points."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from vilmo.types import Matrix


def at_operating_point(scores: Matrix, points: Matrix) -> Matrix:
    """Rescale scores so that each value's operating point reads 0.5: linear from 0 to the
    point and from the point to 1."""
    points = np.clip(points, 1e-6, 1 - 1e-6)
    low = 0.5 * scores / points
    high = 0.5 + 0.5 * (scores - points) / (1.0 - points)
    out: Matrix = np.clip(np.where(scores < points, low, high), 0.0, 1.0).astype(np.float32)
    return out


def rescaled(whole: Matrix, sentences: Matrix, points: Matrix | None,
             sentence_points: Matrix | None) -> Matrix:
    """A text's violation scores from its two readings: each rescaled at its own points and the
    higher kept; with no sentence points, the higher reading rescaled at ``points``; with no
    points, the higher reading as it is."""
    if points is None:
        out: Matrix = np.maximum(whole, sentences)
    elif sentence_points is None:
        out = at_operating_point(np.maximum(whole, sentences), points)
    else:
        out = np.maximum(at_operating_point(whole, points),
                         at_operating_point(sentences, sentence_points))
    return out


def mix_alone(after_prompt: Matrix, alone: Matrix, has_alone: npt.NDArray[np.bool_],
              weight: float) -> Matrix:
    """The whole reading of each reply: ``(1 - weight)`` of its reading after the prompt plus
    ``weight`` of its reading alone (issue 17: "read what the reply does, not what the prompt
    is about"; after a vicious prompt a refusal read with the prompt scores high, read alone it
    does not). A text without a prompt has one reading, kept as it is."""
    mixed = ((1.0 - weight) * after_prompt + weight * alone).astype(np.float32)
    out: Matrix = np.where(has_alone[:, None], mixed, after_prompt).astype(np.float32)
    return out


def length_batches(lengths: Sequence[int], size: int) -> list[list[int]]:
    """Row indices in batches of at most ``size`` rows of similar length (a new batch when a
    row is over 1.5 times the batch's shortest), so short windows are not padded to long ones:
    sentence spans, fine and coarse windows of a reply go to separate batches."""
    batches: list[list[int]] = []
    for r in sorted(range(len(lengths)), key=lengths.__getitem__):
        if (not batches or len(batches[-1]) >= size
                or lengths[r] > 1.5 * lengths[batches[-1][0]]):
            batches.append([])
        batches[-1].append(r)
    return batches


BATCH_OVERHEAD_TOKENS = 15.0
"""One call into the graph costs about as much as 15 tokens of one row (about 0.8 ms on the
issue 16 host, Xeon with AMX, MiniLM-L6 int8)."""
ATTENTION_TOKENS = 430.0
"""A row of ``w`` tokens costs ``w + w * w / ATTENTION_TOKENS`` tokens: its linear layers grow
with ``w``, its attention with ``w`` squared (fitted on the same host, 16 to 256 tokens)."""


SHARED_FROM_TOKENS = 150.0
"""``balanced_batches`` leaves a text predicted shorter than this (about 8 ms) as it is: it
would save a few milliseconds at most, and every cut costs one more call."""
ITEM_CORES = 2
"""The cores ``item_batches`` cuts a text's batches for: a constant, not this machine's cores
nor the ones idle now, so a text's batches, and so its scores, are the same on every host and
under any load; ``vilmo.judge.value_onnx.run_batches`` then shares the batches over whatever
cores are idle without changing them."""


def batch_cost(rows: int, width: int) -> float:
    """The rough time of one padded batch, in tokens of one row's linear layers: what
    ``balanced_batches`` balances and ``vilmo.judge.value_onnx.run_batches`` orders by."""
    return BATCH_OVERHEAD_TOKENS + rows * (width + width * width / ATTENTION_TOKENS)


def makespan(costs: Sequence[float], cores: int) -> float:
    """When the last batch ends, the costliest taken first by whichever of ``cores`` is free
    (as ``run_batches`` shares them out)."""
    ends = [0.0] * max(1, cores)
    for cost in sorted(costs, reverse=True):
        ends[ends.index(min(ends))] += cost
    return max(ends)


def balanced_batches(lengths: Sequence[int], size: int, cores: int) -> list[list[int]]:
    """``length_batches``, then, for a text of a few rows (at most ``size`` per core), the
    costliest batch cut in two (between rows sorted by length) for as long as a cut shortens
    the predicted time on ``cores`` cores (``makespan`` of ``batch_cost``) of a text that is
    not short (``SHARED_FROM_TOKENS``). A lone check's whole reading (after the prompt and
    alone) otherwise made one batch that one core read while the other finished the sentence
    spans and idled (issue 16). A cut costs one more call, so rows stay together where sharing
    gains nothing; many rows already make batches enough for every core. The judge passes a
    constant ``cores`` (``item_batches``), never the cores idle now: the int8 graph quantises
    activations per batch, so a cut moves scores a little (``bench/bench_lone_check.py``), and
    a text's cuts must not depend on the machine's load."""
    batches = length_batches(lengths, size)
    if cores <= 1 or len(lengths) > size * cores:
        return batches

    def cost(rows: list[int]) -> float:
        return batch_cost(len(rows), max(lengths[r] for r in rows))

    costs = [cost(b) for b in batches]
    best = makespan(costs, cores)
    if best < SHARED_FROM_TOKENS:
        return batches
    while True:
        at = max(range(len(batches)), key=costs.__getitem__)
        rows, rest = batches[at], costs[:at] + costs[at + 1:]
        cuts = [(makespan([*rest, cost(rows[:k]), cost(rows[k:])], cores), k)
                for k in range(1, len(rows))]
        if not cuts or min(cuts)[0] >= best:
            return batches
        best, k = min(cuts)
        batches[at:at + 1] = [rows[:k], rows[k:]]
        costs[at:at + 1] = [cost(rows[:k]), cost(rows[k:])]


def item_batches(lengths: Sequence[int], owner: Sequence[int], size: int) -> list[list[int]]:
    """Row indices in batches that never mix two texts' rows: each text's rows (``owner``)
    batched by ``balanced_batches`` for ``ITEM_CORES``. The int8 graph quantises activations
    per batch, pad positions included, so a row's scores depend on every row of its batch;
    batched apart, a text's scores depend on the text alone, not on the texts that share its
    call (the micro-batcher's other requests, an evaluation's other rows) or on the load."""
    rows_of: dict[int, list[int]] = {}
    for row, item in enumerate(owner):
        rows_of.setdefault(item, []).append(row)
    return [[rows[r] for r in batch] for rows in rows_of.values()
            for batch in balanced_batches([lengths[r] for r in rows], size, ITEM_CORES)]


def max_pool(rows: Matrix, owner: Sequence[int] | npt.NDArray[np.int64], n: int,
             floor: float = 0.0) -> Matrix:
    """Per item, the highest value of each column over the item's rows (``floor`` if none)."""
    out = np.full((n, rows.shape[1]), floor, dtype=np.float32)
    np.maximum.at(out, np.asarray(owner, dtype=np.int64), rows)
    return out


def mean_pool(rows: Matrix, owner: npt.NDArray[np.int64], n: int) -> Matrix:
    """Per item, the mean of each column over the item's rows (0 if none)."""
    total = np.zeros((n, rows.shape[1]), dtype=np.float32)
    np.add.at(total, owner, rows)
    count = np.bincount(owner, minlength=n).astype(np.float32)
    out: Matrix = (total / np.maximum(count, 1.0)[:, None]).astype(np.float32)
    return out
