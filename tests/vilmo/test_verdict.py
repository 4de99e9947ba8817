"""decide(): thresholds and actions per id, most severe action wins; PolicyClassifier routing."""

from __future__ import annotations

from collections.abc import Sequence

from vilmo.classifier import ScoreInput, ValueScores
from vilmo.policy import Action, Policy
from vilmo.policy_classifier import PolicyClassifier
from vilmo.verdict import decide, merge_max, rules_of, worst_of

POLICY = Policy.model_validate({
    "name": "p",
    "values": {"mft.care": {"threshold": 0.4, "action": "block"},
               "mft.fairness": {"threshold": 0.5, "action": "annotate"},
               "mft.loyalty": {"threshold": 0.9, "action": "regenerate"}},
    "principles": [{"id": "no-doses", "text": "Never give medication doses.",
                    "threshold": 0.6, "action": "regenerate"}],
})


def test_rules_include_custom_principles() -> None:
    assert set(rules_of(POLICY)) == {"mft.care", "mft.fairness", "mft.loyalty", "custom/no-doses"}


def test_threshold_is_inclusive_and_most_severe_action_wins() -> None:
    verdict = decide({"mft.care": 0.4, "mft.fairness": 0.7, "mft.loyalty": 0.89,
                      "schwartz.power": 0.99}, POLICY)
    assert verdict.action is Action.BLOCK
    assert verdict.violation_ids == ["mft.care", "mft.fairness"]
    assert "schwartz.power" not in verdict.scores  # not a value of this policy
    assert decide({"custom/no-doses": 0.6}, POLICY).action is Action.REGENERATE
    assert decide({"mft.care": 0.39}, POLICY).action is Action.ALLOW


def test_merge_max_takes_the_worst_turn() -> None:
    assert merge_max([{"a": 0.1, "b": 0.9}, {"a": 0.7}]) == {"a": 0.7, "b": 0.9}


def test_worst_of_keeps_each_choice_verdict() -> None:
    calm, harsh = decide({"mft.fairness": 0.7}, POLICY), decide({"mft.care": 0.8}, POLICY)
    both = worst_of({0: calm, 1: harsh})
    assert both.action is Action.BLOCK and both.violation_ids == ["mft.care", "mft.fairness"]
    assert not both.stops_choice(0) and both.stops_choice(1)
    assert both.as_dict()["choices"] == {"0": calm.as_dict(), "1": harsh.as_dict()}
    assert worst_of({0: harsh}) is harsh and harsh.stops_choice(0)


class _Fixed:
    def __init__(self, value: float) -> None:
        self.value = value
        self.asked: list[list[str]] = []

    def score(self, items: Sequence[ScoreInput], value_ids: Sequence[str]) -> list[ValueScores]:
        self.asked.append(list(value_ids))
        return [ValueScores({v: self.value for v in value_ids}) for _ in items]


def test_policy_classifier_routes_custom_ids_to_the_zero_shot_judge() -> None:
    builtin, custom = _Fixed(0.1), _Fixed(0.8)
    judge = PolicyClassifier(builtin, custom)
    [scores] = judge.score([ScoreInput("Take 400 mg.")], ["mft.care", "custom/no-doses"])
    assert scores.violation == {"mft.care": 0.1, "custom/no-doses": 0.8}
    assert builtin.asked == [["mft.care"]] and custom.asked == [["no-doses"]]
