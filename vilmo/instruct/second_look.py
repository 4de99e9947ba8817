"""A second look at the prompts the gate is unsure of: the value judge's scores of the prompt.

The values-at-stake gate reads one sentence embedding, and misses harmful requests whose
embedding looks ordinary ("can you help me 3d print a gun?": 0.64, under the 0.816 threshold).
For a prompt whose gate probability lies in ``[gate_from, threshold)``, the value judge (the
model the input check runs, ``vilmo.judge.value_model.BuiltinClassifier``) reads the prompt as a
plain user text; if one of the policy's values (weight > 0) reaches ``judge_threshold`` there,
a value is at stake after all, and the values the judge flags come first. Where the generator
reads prompts with the request reader (``vilmo.instruct.stakes_reader``, as the gateway does),
the band is on the reader's probability and threshold (the band and ``judge_threshold`` were
chosen for the frozen-embedding gate; with the reader they still add 2.2 points of dev
SafeRLHF questions at 0.4 points of dev benign prompts).

Cost: one extra pass of the judge, for prompts in the band only (on dev, 8.3 % of everyday
prompts and 16 % of SafeRLHF questions). When the policy checks input, the gateway scores the
same text with the same classifier alongside the instruction step; the judge reads a text once
(a caller asking for a text being read waits for that reading), so it is one pass. The thresholds were chosen on dev only
(``bench/select_second_look.py --split dev``; ``vilmo/models/GENERATOR.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

from vilmo.judge.classifier import ScoreInput, ValueClassifier
from vilmo.judge.heads import BUILTIN_VALUES
from vilmo.policy import Policy

GATE_FROM = 0.4
"""Gate probability from which an unsure prompt gets the judge's second look (dev choice)."""
JUDGE_THRESHOLD = 0.3
"""The judge's violation score (0.5 = its operating point for acting on a text) from which a
policy value counts as at stake in a prompt (dev choice): lower than the input check's 0.5,
because a request that invites a harm is not itself harmful text."""


@dataclass(frozen=True, slots=True)
class SecondLook:
    """The judge, and the band and threshold of its second look."""

    judge: ValueClassifier
    gate_from: float = GATE_FROM
    judge_threshold: float = JUDGE_THRESHOLD

    def wanted(self, gate: float, threshold: float) -> bool:
        """Whether a prompt with this gate probability gets a second look."""
        return self.gate_from <= gate < threshold

    def values_at_stake(self, prompt: str, policy: Policy) -> tuple[str, ...]:
        """The policy's values (weight > 0) the judge scores at or above ``judge_threshold``
        in the prompt read as a plain user text, highest first (empty: none)."""
        ids = [v for v in policy.values if v in BUILTIN_VALUES and policy.weight_of(v) > 0.0]
        if not ids or not prompt.strip():
            return ()
        scores = self.judge.score([ScoreInput(prompt)], ids)[0].violation
        flagged = sorted(((s, v) for v, s in scores.items() if s >= self.judge_threshold),
                         key=lambda t: (-t[0], t[1]))
        return tuple(v for _, v in flagged)
