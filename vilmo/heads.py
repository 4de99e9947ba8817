"""The classifier's output heads and how value scores are composed from them.

The network has one linear layer of logits, named here. Value scores are not all read off a
single logit: a safety value is "the text is about this harm" times "the reply goes along with
harm", and a foundation is "this foundation is at stake" times "what is described or done is
wrong". Topic and stance are learned apart, so a refusal that talks about a harm scores low.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vilmo.types import Matrix
from vilmo.values import VALUEEVAL_CATEGORIES, values_in

MFT: tuple[str, ...] = tuple(v.id for v in values_in("mft"))
SCHWARTZ: tuple[str, ...] = tuple(v.id for v in values_in("schwartz"))
SAFETY: tuple[str, ...] = tuple(v.id for v in values_in("safety"))
BUILTIN_VALUES: tuple[str, ...] = MFT + SCHWARTZ + SAFETY


def head_names() -> tuple[str, ...]:
    """Every logit of the network, in order."""
    return (
        "cm", "justice", "deontology", "harm",
        *(f"against:{v}" for v in SCHWARTZ),
        *(f"upholds:{v}" for v in SCHWARTZ),
        *(f"valueeval:{c}" for c in VALUEEVAL_CATEGORIES),
        *(f"topic:{v}" for v in SAFETY),
        *(f"foundation:{v}" for v in MFT),
    )


def compose(probs: Matrix, names: Sequence[str]) -> tuple[Matrix, Matrix]:
    """Calibrated head probabilities -> (violation per BUILTIN_VALUES, upholds per SCHWARTZ)."""
    col = {n: i for i, n in enumerate(names)}
    wrong = np.maximum(probs[:, col["cm"]], probs[:, col["harm"]])
    out = np.zeros((probs.shape[0], len(BUILTIN_VALUES)), dtype=np.float32)
    for j, value_id in enumerate(BUILTIN_VALUES):
        if value_id in SCHWARTZ:
            out[:, j] = probs[:, col[f"against:{value_id}"]]
        elif value_id in SAFETY:
            out[:, j] = probs[:, col[f"topic:{value_id}"]] * probs[:, col["harm"]]
        else:
            out[:, j] = probs[:, col[f"foundation:{value_id}"]] * wrong
    upholds = np.stack([probs[:, col[f"upholds:{v}"]] for v in SCHWARTZ], axis=1)
    return out, upholds.astype(np.float32)
