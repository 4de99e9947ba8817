"""Where the built graphs live on disk: the cache folder, written whole (a concurrent process
never reads half a graph), with this user's private temporary folder as the fallback where the
cache folder cannot be written (a graph is code the process runs, so that folder must be this
user's alone)."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path


def cache_dir() -> Path:
    """``$VILMO_CACHE_DIR``, else ``$XDG_CACHE_HOME/vilmo``, else ``~/.cache/vilmo``."""
    if os.environ.get("VILMO_CACHE_DIR"):
        return Path(os.environ["VILMO_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vilmo"


def cached_file(target: Path) -> Path | None:
    """Where ``write_cached`` put ``target``, or None when it is not there yet: the cache
    folder, or where that cannot be written, this user's private temporary folder, read only
    when it is still this user's alone (``_private_folder``)."""
    if target.exists():
        return target
    above = target.parent
    while not above.exists() and above != above.parent:
        above = above.parent
    if above.is_dir() and os.access(above, os.W_OK):
        return None  # a writable cache: the graph is built there
    folder = _private_folder()
    if folder is None or not (folder / target.name).exists():
        return None
    return folder / target.name


def write_cached(target: Path, write: Callable[[Path], None]) -> Path:
    """Where ``write(path)`` put the file: ``target``, written whole (under a temporary name,
    then renamed, so a concurrent process never reads half a graph), or, where the cache
    folder is not writable, the same name in this user's private temporary folder (reused:
    the name carries the build key, so every start does not write another copy)."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _write_whole(target, write)
        return target
    except OSError:
        pass
    fallback = _private_temp_dir() / target.name
    if not fallback.exists():
        _write_whole(fallback, write)
    return fallback


def _private_temp_dir() -> Path:
    """``$TMPDIR/vilmo-onnx-<uid>`` (``_private_folder``), made if missing; a new folder each
    time if that one is not safe to use."""
    with contextlib.suppress(OSError):
        _private_folder_path().mkdir(mode=0o700, exist_ok=True)
    return _private_folder() or Path(tempfile.mkdtemp(prefix="vilmo-onnx-"))


def _private_folder_path() -> Path:
    return Path(tempfile.gettempdir()) / f"vilmo-onnx-{os.getuid()}"


def _private_folder() -> Path | None:
    """``$TMPDIR/vilmo-onnx-<uid>`` if it is a real folder owned by this user and closed to
    others (a graph is code the process runs), else None."""
    folder = _private_folder_path()
    try:
        info = folder.lstat()
    except OSError:
        return None
    if stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o077:
        return folder
    return None


def _write_whole(target: Path, write: Callable[[Path], None]) -> None:
    partial = target.with_name(f"{target.name}.{os.getpid()}.part")
    write(partial)
    os.replace(partial, target)
