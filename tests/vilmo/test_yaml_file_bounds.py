"""A YAML file is read only when it is a regular file of at most ``MAX_FILE_BYTES``.

The review's case: ``vilmo policy validate /dev/zero`` never returned (the whole "file" was
read, growing without end), and a named pipe waited for a writer forever. Both are refused
with one clear error now, and so is a regular file over the cap.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

import vilmo.yamlfile
from vilmo.cli import cli
from vilmo.policy import PolicyError, load_policy

POLICY = "name: small\nvalues:\n  mft.care: {}\n"


def load_within(path: Path, seconds: float = 10.0) -> BaseException | None:
    """What ``load_policy(path)`` raised (None: it loaded), or a failure if it is still
    reading after ``seconds`` (a pipe then gets a writer, so the thread ends)."""
    outcome: list[BaseException | None] = []

    def load() -> None:
        try:
            load_policy(path)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        if path.is_fifo():
            with path.open("w"):
                pass  # a writer that closes at once: the reader sees the end
            thread.join(seconds)
        pytest.fail(f"loading {path} was still reading after {seconds} s")
    return outcome[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_named_pipe_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    pipe = tmp_path / "policy.yaml"
    os.mkfifo(pipe)
    error = load_within(pipe)
    assert isinstance(error, PolicyError), error
    assert "not a regular file" in str(error)


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero here")
def test_validate_refuses_a_device_with_a_clear_error() -> None:
    result = CliRunner().invoke(cli, ["policy", "validate", "/dev/zero"])
    assert result.exit_code == 1, result.output
    assert "/dev/zero" in result.output and "not a regular file" in result.output


def test_a_file_over_the_cap_is_refused_before_it_is_parsed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vilmo.yamlfile, "MAX_FILE_BYTES", 64, raising=False)
    large = tmp_path / "large.yaml"
    large.write_text(POLICY + "# padding\n" * 10)
    error = load_within(large)
    assert isinstance(error, PolicyError), error
    assert "larger than 64 bytes" in str(error)
    small = tmp_path / "small.yaml"
    small.write_text(POLICY)
    assert len(POLICY) <= 64 and load_within(small) is None
