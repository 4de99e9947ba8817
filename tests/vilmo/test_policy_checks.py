"""``checks.fail_open_max_chars``: bounded, never over ``checks.max_chars``, and in the schema.

The key bounds what a failed check may pass unchecked under ``on_error: open`` (the guard's
side is tests/proxy/test_fail_open_size.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from vilmo.cli import cli
from vilmo.policy import FAIL_OPEN_MAX_CHARS, PolicyError, load_policy

HEAD = "name: p\nvalues:\n  mft.care: {}\n"


def checks_of(tmp_path: Path, checks: str) -> tuple[int, int]:
    path = tmp_path / "p.yaml"
    path.write_text(f"{HEAD}checks: {checks}\n")
    policy = load_policy(path)
    return policy.checks.fail_open_max_chars, policy.checks.max_chars


def test_the_default_is_8000_or_a_lower_max_chars(tmp_path: Path) -> None:
    assert FAIL_OPEN_MAX_CHARS == 8_000
    assert checks_of(tmp_path, "{}") == (8_000, 100_000)
    assert checks_of(tmp_path, "{max_chars: 300}") == (300, 300)  # still valid
    assert checks_of(tmp_path, "{max_chars: 20000}") == (8_000, 20_000)
    assert checks_of(tmp_path, "{fail_open_max_chars: 100000}") == (100_000, 100_000)
    assert checks_of(tmp_path, "{max_chars: 300, fail_open_max_chars: 32}") == (32, 300)


@pytest.mark.parametrize("checks, words", [
    ("{fail_open_max_chars: 0}", "greater than or equal to 1"),
    ("{fail_open_max_chars: -5}", "greater than or equal to 1"),
    ("{fail_open_max_chars: 20000000, max_chars: 10000000}", "less than or equal to 10000000"),
    ("{fail_open_max_chars: many}", "valid integer"),
    ("{fail_open_max_chars: 100001}", "over max_chars (100000)"),
    ("{max_chars: 300, fail_open_max_chars: 301}", "over max_chars (300)"),
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
