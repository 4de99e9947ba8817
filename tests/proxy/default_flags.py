"""Whether a policy flags texts read as the guard reads them (each reading scored apart, each
value's highest kept: ``proxy.guard.Guard._score``), with the real judge: the one rule the
real-judge tests of the reading (``test_hidden_*_real``, ``test_shown_text_*_real``) share."""

from __future__ import annotations

from proxy.judged_text import each_reading, highest_per_item
from vilmo.judge.classifier import ScoreInput
from vilmo.judge.value_model import BuiltinClassifier
from vilmo.policy import Policy, load_policy
from vilmo.policy_store import SHIPPED_POLICY_DIR
from vilmo.verdict import decide


def default_policy() -> Policy:
    return load_policy(SHIPPED_POLICY_DIR / "default.yaml")


def flagged(judge: BuiltinClassifier, policy: Policy, items: list[ScoreInput]) -> bool:
    """Whether ``policy`` flags any value of the one item ``items`` holds, read as served."""
    readings, owners = each_reading(items)
    scores = judge.score(readings, list(policy.values))
    (highest,) = highest_per_item(owners, [s.violation for s in scores])
    return bool(decide(highest, policy).violations)
