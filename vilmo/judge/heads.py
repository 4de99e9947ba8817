"""The classifier's output heads and how value scores are composed from them.

The network has one linear layer of logits, named here. Value scores are not all read off a
single logit. Whether a text is bad is read from two heads the model must tell apart:
``content`` (the text's own content is harmful, readable without any prompt: it is trained on
replies and plain user texts alone as well as after their prompt) and ``harm`` (the reply goes
along with a harmful or wrong request instead of refusing or redirecting it). Then a safety
value is "the text is about this harm" times "bad", and a foundation is "this foundation is at
stake" times "bad, or what is described is wrong" (``cm``). Topic and stance are learned apart,
so a refusal or a de-escalation that talks about a harm scores low however vicious the prompt.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from vilmo.types import Matrix
from vilmo.values import VALUEEVAL_CATEGORIES, values_in

MFT: tuple[str, ...] = tuple(v.id for v in values_in("mft"))
SCHWARTZ: tuple[str, ...] = tuple(v.id for v in values_in("schwartz"))
SAFETY: tuple[str, ...] = tuple(v.id for v in values_in("safety"))
BUILTIN_VALUES: tuple[str, ...] = MFT + SCHWARTZ + SAFETY


def head_names() -> tuple[str, ...]:
    """Every logit of the network, in order."""
    return (
        "cm", "justice", "deontology", "harm", "content",
        *(f"against:{v}" for v in SCHWARTZ),
        *(f"upholds:{v}" for v in SCHWARTZ),
        *(f"valueeval:{c}" for c in VALUEEVAL_CATEGORIES),
        *(f"topic:{v}" for v in SAFETY),
        *(f"foundation:{v}" for v in MFT),
    )


COMPOSE_MODES = ("product", "relative")


def compose(probs: Matrix, names: Sequence[str], mode: str = "product",
            power: float = 1.0) -> tuple[Matrix, Matrix]:
    """Calibrated head probabilities -> (violation per BUILTIN_VALUES, upholds per SCHWARTZ).

    ``mode="product"``: safety.X = P(topic X) ** power * bad (``power`` < 1 trusts the
    weakly trained topic and foundation heads less: chosen on dev). ``mode="relative"``: the topic and
    foundation heads say *which* harm or foundation a bad text is about, relative to the
    likeliest one: safety.X = bad * P(topic X) / max over topics, so a text the content and
    compliance heads judge bad always reaches its likeliest harm and foundation in full, however
    unsure the (weakly trained) topic heads are of the absolute probability.
    """
    col = {n: i for i, n in enumerate(names)}
    topic_cols = [col[f"topic:{v}"] for v in SAFETY]
    found_cols = [col[f"foundation:{v}"] for v in MFT]
    if mode == "relative":
        topics = probs[:, topic_cols] / np.maximum(probs[:, topic_cols].max(axis=1,
                                                                            keepdims=True), 1e-6)
        founds = probs[:, found_cols] / np.maximum(probs[:, found_cols].max(axis=1,
                                                                           keepdims=True), 1e-6)
    elif mode == "product":
        topics, founds = probs[:, topic_cols] ** power, probs[:, found_cols] ** power
    else:
        raise ValueError(f"unknown compose mode {mode!r} (one of {COMPOSE_MODES})")
    harm = probs[:, col["harm"]]
    bad = np.maximum(probs[:, col["content"]], harm) if "content" in col else harm
    wrong = np.maximum(probs[:, col["cm"]], bad)
    out = np.zeros((probs.shape[0], len(BUILTIN_VALUES)), dtype=np.float32)
    for j, value_id in enumerate(BUILTIN_VALUES):
        if value_id in SCHWARTZ:
            out[:, j] = probs[:, col[f"against:{value_id}"]]
        elif value_id in SAFETY:
            out[:, j] = topics[:, SAFETY.index(value_id)] * bad
        else:
            out[:, j] = founds[:, MFT.index(value_id)] * wrong
    upholds = np.stack([probs[:, col[f"upholds:{v}"]] for v in SCHWARTZ], axis=1)
    return out, upholds.astype(np.float32)


READING_SOURCES = ("whole", "alone", "mean", "max")
"""Where a window after the prompt takes a head's probability from: its own reading
(``whole``), the reply's reading alone (``alone``), their mean or their higher."""


def read_alone(probs: Matrix, alone: Matrix, names: Sequence[str], foundations: str = "whole",
               cm: str = "whole") -> Matrix:
    """``probs`` (rows: a reply's windows after its prompt) with the ``foundation:*`` rows and
    the ``cm`` row taken as ``foundations`` and ``cm`` say (``READING_SOURCES``) from the rows'
    own probabilities and ``alone``, the reply's probabilities read alone (one row, or one per
    row). A story read with its continuation speaks for the continuation's foundation and
    wrongness (issue 17, target 4); read alone the continuation speaks for itself, and the
    reading alone is already run for every reply after a prompt. Only ``mft.*`` reads these
    rows (``compose``)."""
    out = probs.copy()
    for source, cols in ((foundations, [i for i, n in enumerate(names)
                                        if n.startswith("foundation:")]),
                         (cm, [names.index("cm")])):
        own, other = probs[:, cols], np.broadcast_to(alone, probs.shape)[:, cols]
        if source == "alone":
            out[:, cols] = other
        elif source == "mean":
            out[:, cols] = 0.5 * (own + other)
        elif source == "max":
            out[:, cols] = np.maximum(own, other)
        elif source != "whole":
            raise ValueError(f"unknown reading source {source!r} (one of {READING_SOURCES})")
    return out


def heads_read_alone(probs: Matrix, item: npt.NDArray[np.int64], after: npt.NDArray[np.bool_],
                     bare: npt.NDArray[np.bool_], names: Sequence[str], foundations: str,
                     cm: str) -> Matrix:
    """Window probabilities with the windows ``after`` their prompt reading the ``foundation:*``
    and ``cm`` rows as ``read_alone`` says, from their text's reading alone (the highest over
    its ``bare`` windows, of text ``item``); a text with no reading alone keeps its own."""
    if (foundations == cm == "whole") or not bare.any():
        return probs
    alone = np.full((int(item.max()) + 1, probs.shape[1]), -1.0, dtype=np.float32)
    np.maximum.at(alone, item[bare], probs[bare])
    rows = after & (alone[item, 0] >= 0.0)
    out = probs.copy()
    out[rows] = read_alone(probs[rows], alone[item[rows]], names, foundations, cm)
    return out
