"""Policy files that YAML or the models would accept but that cannot mean what they say:
duplicate keys, duplicate principle ids, static without text, a schema that misses a rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import ValidationError

from vilmo.policy import Policy, PolicyError, load_policy, policy_schema
from vilmo.policy_store import SHIPPED_POLICY_DIR

BASE: dict[str, Any] = {"name": "p", "values": {"mft.care": {}}}


def test_duplicate_keys_are_issues_with_their_lines(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("name: strict\nvalues:\n  mft.care: {threshold: 0.4, action: block}\n"
                    "  mft.fairness: {}\n  mft.care: {threshold: 0.4}\n"
                    "on_error: closed\non_error: open\n")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    found = [(i.line, i.field) for i in caught.value.issues]
    assert found == [(5, "values.mft.care"), (7, "on_error")]
    assert "first given at line 3" in caught.value.issues[0].message


def test_an_alias_reused_is_not_a_duplicate(tmp_path: Path) -> None:
    path = tmp_path / "alias.yaml"
    path.write_text("name: p\nvalues:\n  mft.care: &rule {threshold: 0.4}\n"
                    "  mft.fairness: *rule\n")
    assert set(load_policy(path).values) == {"mft.care", "mft.fairness"}


def test_merge_keys_may_be_overridden_and_shared(tmp_path: Path) -> None:
    """A YAML merge key (``<<: *rule``) followed by one of the merged keys is an override (the
    mapping's own key wins), and two merged mappings may share keys: neither is a duplicate."""
    path = tmp_path / "merge.yaml"
    path.write_text("name: p\nvalues:\n  mft.care: &rule {action: block, weight: 0.5}\n"
                    "  mft.loyalty: &other {action: annotate, threshold: 0.3}\n"
                    "  mft.fairness:\n    <<: *rule\n    action: annotate\n"
                    "  mft.authority:\n    <<: [*rule, *other]\n")
    values = load_policy(path).values
    assert (values["mft.fairness"].action, values["mft.fairness"].weight) == ("annotate", 0.5)
    assert (values["mft.authority"].weight, values["mft.authority"].threshold) == (0.5, 0.3)


def test_a_key_written_twice_beside_a_merge_key_is_a_duplicate(tmp_path: Path) -> None:
    path = tmp_path / "dup-merge.yaml"
    path.write_text("name: p\nvalues:\n  mft.care: &rule {action: block}\n"
                    "  mft.fairness:\n    <<: *rule\n    action: annotate\n"
                    "    action: allow\n")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert [(i.line, i.field) for i in caught.value.issues] == [(7, "values.mft.fairness.action")]


def test_non_utf8_and_too_deep_files_are_located_issues(tmp_path: Path) -> None:
    latin = tmp_path / "latin1.yaml"
    latin.write_bytes(b"name: p\ndescription: caf\xe9\nvalues: {mft.care: {}}\n")
    with pytest.raises(PolicyError) as caught:
        load_policy(latin)
    assert caught.value.issues[0].line == 2
    assert "not UTF-8" in caught.value.issues[0].message
    deep = tmp_path / "deep.yaml"
    deep.write_text("name: p\nvalues: {mft.care: {}}\ndescription: " + "[" * 3000 + "]" * 3000)
    with pytest.raises(PolicyError, match="nested deeper than"):
        load_policy(deep)


def test_principle_ids_must_be_distinct() -> None:
    principles = [{"id": "no-doses", "text": "Never give medication doses."},
                  {"id": "no-doses", "text": "Do not recommend specific clinics."}]
    with pytest.raises(ValidationError, match="'no-doses' is given twice"):
        Policy.model_validate(BASE | {"principles": principles})


@pytest.mark.parametrize("instructions, words", [
    ({"generator": "static"}, "needs `text`"),
    ({"generator": "relevance", "text": "Be kind."}, "only by the static generator"),
    ({"generator": "vilmo", "text": "Be kind."}, "only by the static generator"),
    ({"generator": "relevance", "baseline": "Be kind."}, "only by the vilmo generator"),
    ({"generator": "static", "text": "x", "baseline": "Be kind."}, "only by the vilmo"),
])
def test_instruction_settings_fit_the_generator(instructions: dict[str, Any],
                                                words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        Policy.model_validate(BASE | {"instructions": instructions})


@pytest.mark.parametrize("instructions", [
    {"generator": "static", "text": "Be kind."},
    {"generator": "vilmo", "baseline": "Be kind."},
    {"generator": "none", "text": "Be kind.", "baseline": "Be kind."},  # switched off, kept
])
def test_settings_the_generator_uses_validate(instructions: dict[str, Any]) -> None:
    Policy.model_validate(BASE | {"instructions": instructions})


@pytest.mark.parametrize("doc", [
    {"name": "p", "values": {"mft.caer": {"action": "block"}}},
    {"name": "p", "values": {"mft.care": {}},
     "principles": [{"id": "x", "text": "abcd", "value": "mft.nope"}]},
])
def test_the_schema_refuses_unknown_value_ids_as_the_loader_does(doc: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, policy_schema())
    with pytest.raises(ValidationError, match="unknown value id"):
        Policy.model_validate(doc)


@pytest.mark.parametrize("path", sorted(SHIPPED_POLICY_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_policies_pass_the_schema(path: Path) -> None:
    import yaml

    jsonschema.validate(yaml.safe_load(path.read_text(encoding="utf-8")), policy_schema())
