"""From classifier scores to what the policy says to do: a pure ``decide``.

Each checked id (a taxonomy value, or ``custom/<id>`` for a policy's own principle) has a
threshold and an action; the verdict's action is the most severe among the ids at or above
their threshold (block > regenerate > annotate > allow).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from vilmo.policy import Action, Policy

STOPPING = frozenset({Action.BLOCK, Action.REGENERATE})
"""Actions that stop a reply (or a request) as it is: it is replaced or asked again."""
SEVERITY: Mapping[Action, int] = {Action.ALLOW: 0, Action.ANNOTATE: 1, Action.REGENERATE: 2,
                                  Action.BLOCK: 3}
CUSTOM_PREFIX = "custom/"


@dataclass(frozen=True, slots=True)
class Rule:
    threshold: float
    action: Action

    @property
    def stops(self) -> bool:
        """A violation of this rule stops the reply (or the request)."""
        return self.action in STOPPING


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
    choices: Mapping[int, Verdict] = field(default_factory=dict)
    """Per choice, for a reply with several (``n > 1``); this verdict is then their worst."""

    @property
    def stops(self) -> bool:
        """Whether the text may not go out as it is (block, or regenerate past its limit)."""
        return self.action in STOPPING

    def stops_choice(self, index: int) -> bool:
        """Whether choice ``index`` may not go out (the whole verdict when not per choice)."""
        return self.choices.get(index, self).stops

    @property
    def violation_ids(self) -> list[str]:
        return [v.value_id for v in self.violations]

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"action": self.action.value, "violations": self.violation_ids,
                                  "scores": {k: round(v, 4) for k, v in self.scores.items()}}
        if self.choices:
            out["choices"] = {str(i): v.as_dict() for i, v in sorted(self.choices.items())}
        return out


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


def worst_of(by_choice: Mapping[int, Verdict]) -> Verdict:
    """One verdict for a reply's choices: the most severe action, every id over its threshold
    (its highest score), and each choice's own verdict. A single choice is its own verdict."""
    if len(by_choice) == 1:
        return next(iter(by_choice.values()))
    best: dict[str, Violation] = {}
    for verdict in by_choice.values():
        for hit in verdict.violations:
            if hit.value_id not in best or hit.score > best[hit.value_id].score:
                best[hit.value_id] = hit
    hits = sorted(best.values(), key=lambda v: (-SEVERITY[v.action], -v.score, v.value_id))
    action = max((v.action for v in by_choice.values()), key=SEVERITY.__getitem__,
                 default=Action.ALLOW)
    scores = merge_max([v.scores for v in by_choice.values()])
    return Verdict(scores, tuple(hits), action, choices=dict(by_choice))


def merge_max(verdict_scores: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Per id, the highest score over several texts (e.g. every user turn of a conversation)."""
    merged: dict[str, float] = {}
    for scores in verdict_scores:
        for k, v in scores.items():
            merged[k] = max(merged.get(k, 0.0), float(v))
    return merged
