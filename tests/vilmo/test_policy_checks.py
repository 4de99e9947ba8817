"""The policy's ``checks`` keys, validated with file and line and in the schema:
``fail_open_max_chars`` (bounded, never over ``max_chars``: what a failed check may pass
unchecked under ``on_error: open``; the guard's side is tests/proxy/test_fail_open_size.py),
``input_roles`` and ``unreadable_parts`` (what the input check reads, refusing by default;
the gateway's side is tests/proxy/test_input_roles.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from vilmo.cli import cli
from vilmo.policy import FAIL_OPEN_MAX_CHARS, INPUT_ROLES, CheckSettings, PolicyError, load_policy

HEAD = "name: p\nvalues:\n  mft.care: {}\n"


def checks_of(tmp_path: Path, checks: str) -> CheckSettings:
    path = tmp_path / "p.yaml"
    path.write_text(f"{HEAD}checks: {checks}\n")
    return load_policy(path).checks


def limits_of(tmp_path: Path, checks: str) -> tuple[int, int]:
    settings = checks_of(tmp_path, checks)
    return settings.fail_open_max_chars, settings.max_chars


def test_the_default_is_8000_or_a_lower_max_chars(tmp_path: Path) -> None:
    assert FAIL_OPEN_MAX_CHARS == 8_000
    assert limits_of(tmp_path, "{}") == (8_000, 100_000)
    assert limits_of(tmp_path, "{max_chars: 300}") == (300, 300)  # still valid
    assert limits_of(tmp_path, "{max_chars: 20000}") == (8_000, 20_000)
    assert limits_of(tmp_path, "{fail_open_max_chars: 100000}") == (100_000, 100_000)
    assert limits_of(tmp_path, "{max_chars: 300, fail_open_max_chars: 32}") == (32, 300)


@pytest.mark.parametrize("spelling", ["5000.0", "'5000'", "5000"])
def test_a_lower_max_chars_in_any_spelling_lowers_the_default(tmp_path: Path,
                                                               spelling: str) -> None:
    """pydantic reads 5000.0 and "5000" as 5000; the default is lowered after it has."""
    assert limits_of(tmp_path, f"{{max_chars: {spelling}}}") == (5_000, 5_000)
    settings = CheckSettings.model_validate({"max_chars": 5000.0})
    assert settings == CheckSettings.model_validate(settings.model_dump(exclude_unset=True))


@pytest.mark.parametrize("checks, words", [
    ("{fail_open_max_chars: 0}", "greater than or equal to 1"),
    ("{fail_open_max_chars: -5}", "greater than or equal to 1"),
    ("{fail_open_max_chars: 20000000, max_chars: 10000000}", "less than or equal to 10000000"),
    ("{fail_open_max_chars: many}", "valid integer"),
    ("{fail_open_max_chars: 100001}", "over max_chars (100000)"),
    ("{max_chars: 300, fail_open_max_chars: 301}", "over max_chars (300)"),
    ("{input_roles: [user, moderator]}", "'system', 'developer', 'user'"),
    ("{input_roles: []}", "at least 1 item"),
    ("{input_roles: user}", "valid tuple"),
    ("{unreadable_parts: ignore}", "'refuse' or 'allow'"),
])
def test_bounds_are_enforced_with_file_and_line(tmp_path: Path, checks: str, words: str,
                                                ) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(f"{HEAD}checks: {checks}\n")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    issue = caught.value.issues[0]
    assert issue.file == str(path) and issue.line == 4 and issue.field.startswith("checks")
    assert words in issue.message


def test_the_schema_documents_both_limits() -> None:
    schema = json.loads(CliRunner().invoke(cli, ["policy", "schema"]).output)
    properties = schema["$defs"]["CheckSettings"]["properties"]
    limit = properties["fail_open_max_chars"]
    assert (limit["default"], limit["minimum"], limit["maximum"]) == (8_000, 1, 10_000_000)
    assert "whatever `on_error`" in limit["description"]
    assert "on_error` applies" not in properties["max_chars"]["description"]
    assert "413" in properties["max_chars"]["description"]


def test_every_role_is_read_and_unreadable_parts_refused_by_default(tmp_path: Path) -> None:
    checks = checks_of(tmp_path, "{input: true}")
    assert INPUT_ROLES == ("system", "developer", "user", "assistant", "tool", "function")
    assert checks.input_roles == INPUT_ROLES
    assert checks.unreadable_parts == "refuse"
    narrowed = checks_of(tmp_path, "{input: true, input_roles: [user], unreadable_parts: allow}")
    assert narrowed.input_roles == ("user",) and narrowed.unreadable_parts == "allow"


def test_the_schema_documents_the_input_keys() -> None:
    schema = json.loads(CliRunner().invoke(cli, ["policy", "schema"]).output)
    properties = schema["$defs"]["CheckSettings"]["properties"]
    roles = properties["input_roles"]
    assert roles["default"] == list(INPUT_ROLES) and roles["minItems"] == 1
    assert roles["items"]["enum"] == list(INPUT_ROLES)
    assert "unchecked" in roles["description"]
    parts = properties["unreadable_parts"]
    assert parts["default"] == "refuse" and parts["enum"] == ["refuse", "allow"]
    assert "unreadable_input" in parts["description"]
