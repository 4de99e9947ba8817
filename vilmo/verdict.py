"""From classifier scores to what the policy says to do: a pure ``decide``.

Each checked id (a taxonomy value, or ``custom/<id>`` for a policy's own principle) has a
threshold and an action; the verdict's action is the most severe among the ids at or above
their threshold (block > regenerate > annotate > allow).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from vilmo.policy import Action, Policy

SEVERITY: Mapping[Action, int] = {Action.ALLOW: 0, Action.ANNOTATE: 1, Action.REGENERATE: 2,
                                  Action.BLOCK: 3}
CUSTOM_PREFIX = "custom/"


@dataclass(frozen=True, slots=True)
class Rule:
    threshold: float
    action: Action


@dataclass(frozen=True, slots=True)
class Violation:
    """One id whose violation probability reached its threshold."""

    value_id: str
    score: float
    threshold: float
    action: Action


@dataclass(frozen=True, slots=True)
class Verdict:
    """The scores of one text under one policy, and the action they call for."""

    scores: Mapping[str, float]
    violations: tuple[Violation, ...] = ()
    action: Action = Action.ALLOW
    extra: Mapping[str, object] = field(default_factory=dict)

    @property
    def stops(self) -> bool:
        """Whether the text may not go out as it is (block, or regenerate past its limit)."""
        return self.action in (Action.BLOCK, Action.REGENERATE)

    @property
    def violation_ids(self) -> list[str]:
        return [v.value_id for v in self.violations]

    def as_dict(self) -> dict[str, object]:
        return {"action": self.action.value, "violations": self.violation_ids,
                "scores": {k: round(v, 4) for k, v in self.scores.items()}}


def rules_of(policy: Policy) -> dict[str, Rule]:
    """Every id the policy checks, with its threshold and action."""
    rules = {value_id: Rule(rule.threshold, rule.action)
             for value_id, rule in policy.values.items()}
    for principle in policy.principles:
        rules[CUSTOM_PREFIX + principle.id] = Rule(principle.threshold, principle.action)
    return rules


def decide(scores: Mapping[str, float], policy: Policy) -> Verdict:
    """The verdict for one text's scores; ids the policy does not check are ignored."""
    rules = rules_of(policy)
    checked = {k: float(v) for k, v in scores.items() if k in rules}
    hits = sorted((Violation(k, s, rules[k].threshold, rules[k].action)
                   for k, s in checked.items() if s >= rules[k].threshold),
                  key=lambda v: (-SEVERITY[v.action], -v.score, v.value_id))
    action = hits[0].action if hits else Action.ALLOW
    return Verdict(checked, tuple(hits), action)


def merge_max(verdict_scores: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Per id, the highest score over several texts (e.g. every user turn of a conversation)."""
    merged: dict[str, float] = {}
    for scores in verdict_scores:
        for k, v in scores.items():
            merged[k] = max(merged.get(k, 0.0), float(v))
    return merged
