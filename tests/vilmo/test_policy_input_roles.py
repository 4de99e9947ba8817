"""``checks.input_roles`` and ``checks.unreadable_parts``: what the input check reads, refusing
by default (every role; parts the judge cannot read refused), validated, and in the schema.
The gateway's side is tests/proxy/test_input_roles.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from vilmo.cli import cli
from vilmo.policy import INPUT_ROLES, CheckSettings, PolicyError, load_policy

HEAD = "name: p\nvalues:\n  mft.care: {}\n"


def checks_of(tmp_path: Path, checks: str) -> CheckSettings:
    path = tmp_path / "p.yaml"
    path.write_text(f"{HEAD}checks: {checks}\n")
    return load_policy(path).checks


def test_every_role_is_read_and_unreadable_parts_refused_by_default(tmp_path: Path) -> None:
    checks = checks_of(tmp_path, "{input: true}")
    assert INPUT_ROLES == ("system", "developer", "user", "assistant", "tool", "function")
    assert checks.input_roles == INPUT_ROLES
    assert checks.unreadable_parts == "refuse"
    narrowed = checks_of(tmp_path, "{input: true, input_roles: [user], unreadable_parts: allow}")
    assert narrowed.input_roles == ("user",) and narrowed.unreadable_parts == "allow"


@pytest.mark.parametrize("checks, words", [
    ("{input_roles: [user, moderator]}", "'system', 'developer', 'user'"),
    ("{input_roles: []}", "at least 1 item"),
    ("{input_roles: user}", "valid tuple"),
    ("{unreadable_parts: ignore}", "'refuse' or 'allow'"),
])
def test_unknown_values_are_refused_with_file_and_line(tmp_path: Path, checks: str,
                                                       words: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(f"{HEAD}checks: {checks}\n")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    issue = caught.value.issues[0]
    assert issue.file == str(path) and issue.line == 4 and issue.field.startswith("checks")
    assert words in issue.message


def test_the_schema_documents_both_keys() -> None:
    schema = json.loads(CliRunner().invoke(cli, ["policy", "schema"]).output)
    properties = schema["$defs"]["CheckSettings"]["properties"]
    roles = properties["input_roles"]
    assert roles["default"] == list(INPUT_ROLES) and roles["minItems"] == 1
    assert roles["items"]["enum"] == list(INPUT_ROLES)
    assert "unchecked" in roles["description"]
    parts = properties["unreadable_parts"]
    assert parts["default"] == "refuse" and parts["enum"] == ["refuse", "allow"]
    assert "unreadable_input" in parts["description"]
