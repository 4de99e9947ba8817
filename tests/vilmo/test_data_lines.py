"""JSON Lines are split at "\\n" only, and a line that cannot be read is an error naming its
file and line: never a bare JSONDecodeError or KeyError, never skipped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from vilmo.cli import cli
from vilmo.datasets import readers
from vilmo.datasets.readers import DataError
from vilmo.evaluation.prompts import read_prompts

ODD = {"a": "Line one\u2028line two", "b": "Price: 5\x85 more", "c": "page\x0cbreak",
       "d": "para\u2029graph"}


def test_prompts_with_unicode_line_separators_inside_strings(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_bytes(b"".join(json.dumps({"id": k, "prompt": v}, ensure_ascii=False).encode()
                              + b"\r\n" for k, v in ODD.items()))
    prompts = read_prompts(path)
    assert [(p.id, p.text) for p in prompts] == list(ODD.items())


def saferlhf_file(root: Path, lines: list[str]) -> Path:
    (root / "fulcra").mkdir(parents=True, exist_ok=True)
    path = root / "fulcra" / "saferlhf_test_questions.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_data_readers_split_at_newlines_only(tmp_path: Path) -> None:
    saferlhf_file(tmp_path, [json.dumps({"prompt": v, "safety_issues": ["violence"]},
                                        ensure_ascii=False) for v in ODD.values()])
    assert [text for text, _ in readers.saferlhf(tmp_path, "test")] == list(ODD.values())


def test_a_malformed_line_names_its_file_and_line(tmp_path: Path) -> None:
    good = json.dumps({"prompt": "How do I pick a lock?", "safety_issues": []})
    path = saferlhf_file(tmp_path, [good, "", good[:25]])
    with pytest.raises(DataError, match=f"^{path}:3: not valid JSON"):
        readers.saferlhf(tmp_path, "test")
    saferlhf_file(tmp_path, [good, json.dumps({"safety_issues": ["violence"]})])
    with pytest.raises(DataError, match=f"^{path}:2: no 'prompt' field$"):
        readers.saferlhf(tmp_path, "test")
    saferlhf_file(tmp_path, [good, "[1, 2]"])
    with pytest.raises(DataError, match=f"^{path}:2: expected a JSON object, got list$"):
        readers.saferlhf(tmp_path, "test")


def test_a_malformed_csv_row_names_its_file_and_line(tmp_path: Path) -> None:
    folder = tmp_path / "ethics" / "justice"
    folder.mkdir(parents=True)
    path = folder / "justice_train.csv"
    path.write_text('label,scenario\n1,"two\nlines"\nyes,fine\n')
    with pytest.raises(DataError, match=f"^{path}:4: 'label' is not a whole number: 'yes'$"):
        readers.justice(tmp_path)
    path.write_text("verdict,scenario\n1,fine\n")
    with pytest.raises(DataError, match=f"^{path}:2: no 'label' field$"):
        readers.justice(tmp_path)


def test_the_cli_reports_a_malformed_data_line_cleanly(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    path = saferlhf_file(tmp_path, ['{"prompt": "trunc'])
    monkeypatch.setenv("VILMO_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(cli, ["eval", "--target", "openai/x", "--prompts",
                                      "saferlhf:test:2", "--conditions", "none"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert f"{path}:1: not valid JSON" in result.output
