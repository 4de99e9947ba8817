"""A policy's judge: the built-in classifier for taxonomy values, and the zero-shot classifier
for the policy's own principles (ids ``custom/<id>``), behind one ``ValueClassifier``."""

from __future__ import annotations

from collections.abc import Sequence

from vilmo.judge.classifier import ScoreInput, UnknownValue, ValueClassifier, ValueScores
from vilmo.judge.embedder import TextEncoder
from vilmo.judge.zero_shot import ZeroShotClassifier
from vilmo.policy import Policy
from vilmo.verdict import CUSTOM_PREFIX


class PolicyClassifier:
    """Routes each id to the judge that knows it and merges the scores per item."""

    def __init__(self, builtin: ValueClassifier, custom: ValueClassifier | None) -> None:
        self.builtin = builtin
        self.custom = custom

    def score(self, items: Sequence[ScoreInput], value_ids: Sequence[str]) -> list[ValueScores]:
        custom_ids = [v for v in value_ids if v.startswith(CUSTOM_PREFIX)]
        builtin_ids = [v for v in value_ids if not v.startswith(CUSTOM_PREFIX)]
        merged = [ValueScores({}, {}) for _ in items]
        if builtin_ids:
            for out, scores in zip(merged, self.builtin.score(items, builtin_ids), strict=True):
                out.violation.update(scores.violation)
                out.upholds.update(scores.upholds)
        if custom_ids and self.custom is None:
            raise UnknownValue(f"no judge for custom principles {custom_ids}")
        if custom_ids and self.custom is not None:
            plain = [v.removeprefix(CUSTOM_PREFIX) for v in custom_ids]
            for out, scores in zip(merged, self.custom.score(items, plain), strict=True):
                out.violation.update({CUSTOM_PREFIX + k: v for k, v in scores.violation.items()})
        return merged


class PolicyClassifiers:
    """``policy -> PolicyClassifier``, sharing one built-in model and one encoder, and caching
    each policy's zero-shot anchors until the policy changes."""

    def __init__(self, builtin: ValueClassifier | None = None,
                 encoder: TextEncoder | None = None) -> None:
        if builtin is None:
            from vilmo.judge.value_model import BuiltinClassifier

            builtin = BuiltinClassifier()
        self.builtin = builtin
        self.encoder = encoder
        self._by_policy: dict[int, tuple[Policy, PolicyClassifier]] = {}

    def __call__(self, policy: Policy) -> PolicyClassifier:
        # Policies are immutable and replaced on reload, so identity is the right key (the
        # policy is kept in the entry, so its id cannot be reused while cached).
        found = self._by_policy.get(id(policy))
        if found is None or found[0] is not policy:
            if len(self._by_policy) > 256:
                self._by_policy.clear()
            custom = (ZeroShotClassifier.from_policy(policy, self.encoder)
                      if policy.principles else None)
            found = self._by_policy[id(policy)] = (policy, PolicyClassifier(self.builtin, custom))
        return found[1]
