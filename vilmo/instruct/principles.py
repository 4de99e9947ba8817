"""Value principles: the rules of thumb instructions are built from.

The built-in bank lives in ``vilmo/data/principles.yaml`` (written for this project); a policy's
own principles join it for that policy. Each principle belongs to one value id (custom ones may
belong to none) and carries instruction phrasings in several styles.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from types import MappingProxyType

import yaml

from vilmo.policy import Policy
from vilmo.values import VALUES

STYLES = ("imperative", "reasoned", "role")


@dataclass(frozen=True, slots=True)
class Principle:
    """One rule of thumb and the ways to phrase it as an instruction."""

    id: str
    value: str | None
    text: str
    instructions: Mapping[str, str] = field(default_factory=dict)
    weight: float | None = None
    """A custom principle's own weight; bank principles take their value's weight."""

    def weight_in(self, policy: Policy) -> float:
        """How much this principle counts under a policy."""
        return self.weight if self.weight is not None else policy.weight_of(self.value)

    def phrase(self, style: str) -> str:
        """The instruction in the requested style, falling back to the imperative, then text."""
        return self.instructions.get(style) or self.instructions.get("imperative") or self.text


class PrincipleBank:
    """The built-in principles, and each policy's view of them."""

    def __init__(self, principles: Sequence[Principle]) -> None:
        ids = [p.id for p in principles]
        if len(ids) != len(set(ids)):
            raise ValueError("duplicate principle ids in the bank")
        self.principles = tuple(principles)

    @classmethod
    def load(cls, path: str | Path | None = None) -> PrincipleBank:
        """The bank from a YAML file (default: the one shipped in the package)."""
        if path is None:
            text = files("vilmo").joinpath("data/principles.yaml").read_text(encoding="utf-8")
        else:
            text = Path(path).read_text(encoding="utf-8")
        raw = yaml.safe_load(text) or {}
        principles = []
        for item in raw.get("principles", []):
            value = item["value"]
            if value not in VALUES:
                raise ValueError(f"principle {item['id']!r} names unknown value {value!r}")
            principles.append(Principle(item["id"], value, item["text"],
                                        MappingProxyType(dict(item.get("instructions", {})))))
        return cls(principles)

    def for_policy(self, policy: Policy) -> list[Principle]:
        """The principles a policy protects: bank principles of its values, then its own."""
        chosen = [p for p in self.principles if p.value in policy.values]
        for custom in policy.principles:
            phrasing = custom.instruction or custom.text
            chosen.append(Principle(f"custom/{custom.id}", custom.value, custom.text,
                                    MappingProxyType({"imperative": phrasing}), custom.weight))
        return chosen
