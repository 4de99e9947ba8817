"""A second look at the prompts the gate is unsure of: the value judge's reading of the prompt.

The request reader's gate (``vilmo.instruct.stakes_reader``) misses harmful requests whose
wording looks ordinary. For a prompt whose gate probability lies in ``[gate_from, threshold)``,
the value judge (the model the input check runs, ``vilmo.judge.value_model.BuiltinClassifier``)
reads the prompt as a plain user text; if one of the policy's values (weight > 0) reaches
``judge_threshold`` there, a value is at stake after all, and the values the judge flags come
first.

The built-in judge is read BEFORE its operating-point rescaling (``score(...,
calibrated=False)``: its composed violation probabilities, the higher of the whole and the
sentence reading), so ``judge_threshold`` depends on the judge's weights and per-head Platt
scaling (``calibration`` in its config) but not on its operating points, which are refitted
whenever the judge's acting rule is. Any other judge is read through its plain ``score``.

Cost: one extra pass of the judge, for prompts in the band only (on dev, 6 % of everyday
prompts and 11 % of SafeRLHF questions); in the gateway only its top layers, on the request
reader's hidden states of the same prompt (``vilmo.instruct.shared_bottom``). When the policy checks input, the gateway scores the
same text with the same classifier alongside the instruction step; the judge reads a text once
(a caller asking for a text being read waits for that reading, and the uncalibrated reading is
the same cached reading), so it is one pass. The band and threshold were chosen on dev only,
with the reader's threshold (``bench/select_second_look.py``; ``vilmo/models/GENERATOR.md``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from vilmo.judge.classifier import ScoreInput, ValueClassifier
from vilmo.judge.heads import BUILTIN_VALUES
from vilmo.judge.value_model import BuiltinClassifier
from vilmo.policy import Policy

GATE_FROM = 0.4
"""Gate probability from which an unsure prompt gets the judge's second look (dev choice)."""
JUDGE_THRESHOLD = 0.4
"""The judge's violation probability before operating points from which a policy value counts
as at stake in a prompt (dev choice; a request that invites a harm is not itself harmful text, so it is lower than
most of the judge's operating points for acting on a text: 0.3 to 0.85)."""


@dataclass(frozen=True, slots=True)
class SecondLook:
    """The judge, and the band and threshold of its second look."""

    judge: ValueClassifier
    gate_from: float = GATE_FROM
    judge_threshold: float = JUDGE_THRESHOLD
    calibrated: bool = False
    """Read the built-in judge after its operating-point rescaling, as the second look did
    until issue 13's fourth round (band 0.4, threshold 0.3); for comparisons only."""

    def wanted(self, gate: float, threshold: float) -> bool:
        """Whether a prompt with this gate probability gets a second look."""
        return self.gate_from <= gate < threshold

    def values_at_stake(self, prompt: str, policy: Policy) -> tuple[str, ...]:
        """The policy's values (weight > 0) the judge scores at or above ``judge_threshold``
        in the prompt read as a plain user text, highest first (empty: none)."""
        ids = [v for v in policy.values if v in BUILTIN_VALUES and policy.weight_of(v) > 0.0]
        if not ids or not prompt.strip():
            return ()
        scores = self.readings(prompt, ids)
        flagged = sorted(((s, v) for v, s in scores.items() if s >= self.judge_threshold),
                         key=lambda t: (-t[0], t[1]))
        return tuple(v for _, v in flagged)

    def readings(self, prompt: str, ids: Sequence[str]) -> Mapping[str, float]:
        """The judge's violation reading of the prompt per value id: before the operating
        points for the built-in judge (the same cached reading its calibrated scores come
        from), else its plain scores."""
        item = [ScoreInput(prompt)]
        if isinstance(self.judge, BuiltinClassifier) and not self.calibrated:
            return self.judge.score(item, ids, calibrated=False)[0].violation
        return self.judge.score(item, ids)[0].violation
