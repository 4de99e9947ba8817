"""The value principle bank (vilmo/data/principles.yaml): its shape and its coverage of the taxonomy."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from vilmo.values import VALUES

BANK = Path(__file__).resolve().parents[2] / "vilmo" / "data" / "principles.yaml"
STYLES = ("imperative", "reasoned", "role")
MIN_PER_SYSTEM = {"mft": 10, "schwartz": 4, "safety": 3}


@pytest.fixture(scope="module")
def principles() -> list[dict[str, Any]]:
    data = yaml.safe_load(BANK.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    bank = data.get("principles")
    assert isinstance(bank, list)
    return bank


def test_bank_is_large_enough(principles: list[dict[str, Any]]) -> None:
    assert len(principles) >= 150


def test_every_value_is_known(principles: list[dict[str, Any]]) -> None:
    unknown = sorted({p["value"] for p in principles} - set(VALUES))
    assert not unknown, f"unknown value ids: {unknown}"


def test_ids_are_prefixed_and_unique(principles: list[dict[str, Any]]) -> None:
    ids = [p["id"] for p in principles]
    for p in principles:
        pid = p["id"]
        assert isinstance(pid, str) and pid.startswith(p["value"] + "/"), pid
        assert len(pid) > len(p["value"]) + 1, pid
        assert "," not in pid and not any(c.isspace() for c in pid), pid
    duplicates = [i for i, n in Counter(ids).items() if n > 1]
    assert not duplicates, f"duplicate ids: {duplicates}"


@pytest.mark.parametrize("system", sorted(MIN_PER_SYSTEM))
def test_every_value_is_covered(principles: list[dict[str, Any]], system: str) -> None:
    counts = Counter(p["value"] for p in principles)
    wanted = MIN_PER_SYSTEM[system]
    short = {v.id: counts[v.id] for v in VALUES.values()
             if v.system == system and counts[v.id] < wanted}
    assert not short, f"values with fewer than {wanted} principles: {short}"


def test_text_and_instructions_are_complete(principles: list[dict[str, Any]]) -> None:
    for p in principles:
        assert isinstance(p.get("text"), str) and p["text"].strip(), p["id"]
        instructions = p.get("instructions")
        assert isinstance(instructions, dict), p["id"]
        for style in STYLES:
            phrasing = instructions.get(style)
            assert isinstance(phrasing, str) and phrasing.strip(), (p["id"], style)
        assert len(instructions["imperative"].split()) <= 20, p["id"]


def test_texts_are_not_duplicated(principles: list[dict[str, Any]]) -> None:
    texts = [" ".join(p["text"].lower().split()) for p in principles]
    duplicates = [t for t, n in Counter(texts).items() if n > 1]
    assert not duplicates, f"duplicate texts: {duplicates}"
