"""A YAML file is read only when it is a regular file of at most ``MAX_FILE_BYTES``.

The review's case: ``vilmo policy validate /dev/zero`` never returned (the whole "file" was
read, growing without end), and a named pipe waited for a writer forever. Both are refused
with one clear error now, and so is a regular file over the cap. Second review: a directory
leaked its descriptor, and a socket (or any path that cannot be opened) raised a raw OSError.
"""

from __future__ import annotations

import os
import socket
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


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="no /proc here")
def test_a_directory_is_refused_without_leaking_its_descriptor(tmp_path: Path) -> None:
    """``os.open`` opens a directory; ``os.fdopen`` then raised IsADirectoryError and the
    descriptor was never closed (one leaked per load, e.g. per policy reload pass)."""
    folder = tmp_path / "policy.yaml"
    folder.mkdir()
    before = open_fds()
    for _ in range(20):
        with pytest.raises(PolicyError, match="not a regular file"):
            load_policy(folder)
    assert open_fds() == before


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no unix sockets here")
def test_validate_refuses_a_socket_with_a_clear_error(tmp_path: Path) -> None:
    """A unix socket cannot be opened (ENXIO): ``vilmo policy validate`` printed a raw
    OSError's traceback."""
    path = tmp_path / "policy.yaml"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        result = CliRunner().invoke(cli, ["policy", "validate", str(path)])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert f"{path}: (file): cannot be opened" in result.output


def test_an_unreadable_path_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot be opened: No such file"):
        load_policy(tmp_path / "missing.yaml")
