"""Policy schema, loader errors located by file/line/field, the CLI, and hot reload."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from vilmo.cli import cli
from vilmo.policy import Action, PolicyError, load_policy
from vilmo.policy_store import SHIPPED_POLICY_DIR, PolicyStore, UnknownPolicy

GOOD = "name: small\nvalues:\n  mft.care: {weight: 0.8, threshold: 0.4, action: block}\n"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", sorted((SHIPPED_POLICY_DIR).glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_policies_are_valid(path: Path) -> None:
    policy = load_policy(path)
    assert policy.name == path.stem
    assert policy.values


def test_defaults_and_fields(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path / "p.yaml", GOOD))
    rule = policy.values["mft.care"]
    assert (rule.weight, rule.threshold, rule.action) == (0.8, 0.4, Action.BLOCK)
    assert policy.on_error == "closed"
    assert policy.instructions.placement == "system"
    assert policy.weight_of("mft.care") == 0.8 and policy.weight_of("mft.loyalty") == 0.0


@pytest.mark.parametrize("text, line, field, words", [
    ("name: p\nvalues:\n  mft.carez: {weight: 1}\n", 3, "values.mft.carez", "unknown value id"),
    ("name: p\nvalues:\n  mft.care:\n    weight: 3\n", 4, "values.mft.care.weight", "less than"),
    ("name: p\nvalues:\n  mft.care: {action: explode}\n", 3, "values.mft.care.action", "allow"),
    ("name: p\nvalues:\n  mft.care: {}\nplacement: system\n", 4, "placement", "Extra inputs"),
    ("name: Bad Name\nvalues:\n  mft.care: {}\n", 1, "name", "pattern"),
    ("name: p\nvalues: {}\n", 2, "values", "at least 1"),
    ("name: p\nvalues:\n  mft.care: {}\non_error: maybe\n", 4, "on_error", "closed"),
    ("name: p\nvalues:\n  mft.care: {}\nprinciples:\n  - id: x\n    text: hi there\n"
     + "    value: nope.nope\n", 7, "principles.0.value", "unknown value id"),
])
def test_errors_name_file_line_and_field(tmp_path: Path, text: str, line: int, field: str,
                                         words: str) -> None:
    path = write(tmp_path / "broken.yaml", text)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    issue = caught.value.issues[0]
    assert (issue.file, issue.line, issue.field) == (str(path), line, field)
    assert words in issue.message


def test_yaml_syntax_error_has_a_line(tmp_path: Path) -> None:
    path = write(tmp_path / "syntax.yaml", "name: p\nvalues:\n  mft.care: {weight: 1\n")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert caught.value.issues[0].line is not None
    assert "invalid YAML" in caught.value.issues[0].message


def test_cli_schema_and_validate(tmp_path: Path) -> None:
    runner = CliRunner()
    schema = json.loads(runner.invoke(cli, ["policy", "schema"]).output)
    assert {"name", "values", "instructions", "on_error"} <= set(schema["properties"])
    assert "max_chars" in schema["$defs"]["CheckSettings"]["properties"]
    assert "stream_timeout_s" in schema["$defs"]["StreamSettings"]["properties"]
    good = write(tmp_path / "good.yaml", GOOD)
    bad = write(tmp_path / "bad.yaml", "name: p\nvalues:\n  mft.care: {weigth: 1}\n")
    ok = runner.invoke(cli, ["policy", "validate", str(good)])
    assert ok.exit_code == 0 and "ok" in ok.output
    result = runner.invoke(cli, ["policy", "validate", str(good), str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:3: values.mft.care.weigth: Extra inputs are not permitted" in result.output


def test_store_reloads_changes_and_keeps_last_good(tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path / "small.yaml", GOOD)
    store = PolicyStore(tmp_path, "small", reload_interval=0)
    assert store.get().values["mft.care"].threshold == 0.4

    write(path, GOOD.replace("0.4", "0.7"))
    os.utime(path, ns=(1, 10**18))  # a distinct mtime even on coarse clocks
    store.refresh()  # the first pass that sees a change only notes it (it may be half-written)
    assert store.get("small").values["mft.care"].threshold == 0.7

    with caplog.at_level(logging.ERROR):
        write(path, "name: small\nvalues: [oops\n")
        os.utime(path, ns=(1, 2 * 10**18))
        store.refresh()
        assert store.get("small").values["mft.care"].threshold == 0.7
    assert "keeping its last good version" in caplog.text

    write(tmp_path / "other.yaml", GOOD.replace("small", "other"))
    store.refresh()
    assert store.names() == ["other", "small"]
    with pytest.raises(UnknownPolicy):
        store.get("missing")


def test_store_requires_its_default(tmp_path: Path) -> None:
    write(tmp_path / "small.yaml", GOOD)
    with pytest.raises(UnknownPolicy, match="default policy 'nope'"):
        PolicyStore(tmp_path, "nope")


def test_store_keeps_the_default_when_its_file_goes(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """Removing (or renaming) the default's file must not break every caller without a policy;
    another policy's file removed is gone as before."""
    default = write(tmp_path / "small.yaml", GOOD)
    write(tmp_path / "other.yaml", GOOD.replace("small", "other"))
    store = PolicyStore(tmp_path, "small", reload_interval=0)
    with caplog.at_level(logging.ERROR):
        default.rename(tmp_path / "small.yaml.bak")
        assert store.get().name == "small"
        assert store.get("small").values["mft.care"].threshold == 0.4
    assert "the default policy 'small' is no longer in" in caplog.text
    (tmp_path / "other.yaml").unlink()
    assert store.names() == ["small"]
    with pytest.raises(UnknownPolicy):
        store.get("other")

    write(tmp_path / "small.yaml", GOOD.replace("0.4", "0.6"))  # back: the file's version again
    store.refresh()
    assert store.get().values["mft.care"].threshold == 0.6


def test_store_survives_a_file_removed_while_it_reloads(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A file listed, then removed before its stat (a remove+create racing the reload), keeps
    its previous version on that pass instead of raising out of get()."""
    write(tmp_path / "small.yaml", GOOD)
    other = write(tmp_path / "other.yaml", GOOD.replace("small", "other"))
    store = PolicyStore(tmp_path, "small", reload_interval=0)
    listed = store._policy_files()
    other.unlink()
    monkeypatch.setattr(store, "_policy_files", lambda: listed)
    assert store.get("other").name == "other"
    monkeypatch.undo()
    with pytest.raises(UnknownPolicy):
        store.get("other")
