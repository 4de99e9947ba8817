"""The JSON Lines audit file, bounded: rotated by size, safe for several writers.

Every writer (each worker process, each thread) appends a record whole, in ``O_APPEND``
writes, while it holds an exclusive ``flock`` on a lock file beside it (``.<name>.lock``, kept:
its inode never changes, so every writer waits on the same lock). Under that lock a writer
whose record would take the file past ``max_bytes`` first rotates it (``path`` to ``path.1``,
``path.1`` to ``path.2``..., the oldest past ``rotated_files`` deleted), then writes to a new
file. So a record is never split, across a rotation or between two workers, and never written
to a file a rotation is moving away. (A lock on the file itself would not do: a writer that
waited on a file rotated away must open the new one and wait again, and under contention it
can lose that race without end.)

The file is opened for every record, as before: an outside rotation (logrotate with
``create``) still works, with ``max_bytes`` None. A path that is not a regular file (a pipe,
``/dev/stdout``) is only written to, never locked nor rotated.

The file is its user's only (``PRIVATE_MODE``): one made before (by an older gateway, which
made it 0644, or by logrotate's ``create 0644``) is made so when it is next opened, and its
rotations when the writer is made, each logged once as a warning. One the gateway may write but
does not own (logrotate's ``create 0664 root adm``, the gateway in group ``adm``) cannot be made
so: it is written as it is, with one warning per file (its mode is its owner's to set). The
rotations and lock file are opened without blocking: one that is a pipe would hold the writer
until something read it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

OPEN_APPEND = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
OPEN_READ_APPEND = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
PRIVATE_MODE = 0o600
"""A file this module creates is the gateway's user's only: the records hold prompts and
replies (as the store's file does). A rotation renames the file, so its rotations keep it."""


class RotatingFile:
    """Appends records (``bytes`` ending in a newline) to ``path``, rotated by size."""

    def __init__(self, path: Path, max_bytes: int | None, rotated_files: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.rotated_files = rotated_files
        self.lock_path = path.with_name(f".{path.name}.lock")
        self._torn = False
        """This writer's last record failed part-way and its torn line is still there."""
        for older in (self.lock_path, *map(self.rotated, range(1, rotated_files + 1))):
            with contextlib.suppress(OSError):  # absent, or not ours: its writes still go on
                fd = os.open(older, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
                try:
                    keep_private(fd, older)
                finally:
                    os.close(fd)

    def append(self, record: bytes, wait: bool = True) -> bool:
        """Writes ``record`` whole. When the lock file cannot be opened or a rotation fails
        (the folder read-only), the record is still written (unrotated), and the failure
        raised after it, for the sink's failure count. With ``wait`` False, writes nothing and
        returns False when another writer holds the lock (one rotating the file) or the path
        is a pipe, whose writes wait on its reader."""
        failure: OSError | None = None
        lock = None
        mode = self._mode()
        if not wait and mode is not None and (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
            return False  # a pipe (/dev/stdout, a FIFO) may block: only a waiting writer
        try:
            lock = self._lock(wait, mode)
        except BlockingIOError:
            return False
        except OSError as error:
            failure = error
        try:
            if lock is not None and self._full(len(record)):
                try:
                    self._rotate()
                except OSError as error:
                    failure = error
            fd = _open_to_append(self.path, mode is None or stat.S_ISREG(mode))
            try:
                opened = os.fstat(fd)
                if lock is None and stat.S_ISFIFO(opened.st_mode):
                    # writers of one pipe take turns on the pipe itself: a record over PIPE_BUF
                    # is written in pieces, which two workers' records interleaved (review: 30
                    # of 40 lines of 100 KB corrupt); released when ``fd`` is closed
                    fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    keep_private(fd, self.path)
                except OSError as error:  # not ours to change: the record still goes in
                    failure = failure or error
                self._write_line(fd, record, opened, lock is not None)
            finally:
                os.close(fd)
        finally:
            if lock is not None:
                os.close(lock)  # releases the flock
        if failure is not None:
            raise failure
        return True

    def _write_line(self, fd: int, record: bytes, opened: os.stat_result, locked: bool,
                    ) -> None:
        """``record`` on a line of its own. A write that fails part-way (disk full, ``EFBIG``)
        left a torn line, which the next record was glued onto (review r3: both lost to a
        JSON Lines reader): a writer holding the lock cuts the file back to its size before
        the write; where it cannot (a pipe, a file written without the lock, a cut that
        failed), the next record starts with a newline, as it does after a torn line another
        writer left (a regular file that does not end in one)."""
        size = opened.st_size if stat.S_ISREG(opened.st_mode) else None
        if size is None:
            torn = self._torn
        else:  # a rotation's fresh file starts clean whatever the last one held
            torn = size > 0 and not _ends_line(fd, size, not self._torn)
        if torn:
            record = b"\n" + record
        try:
            _write_all(fd, record)
        except OSError:
            self._torn = not (locked and size is not None and _cut(fd, size))
            raise
        self._torn = False

    def _mode(self) -> int | None:
        """The path's mode; None while it does not exist. A pipe or a socket is written only by
        a waiting writer: a write may block for as long as its reader does (review: a stalled
        log reader held the event loop 2.8 s, an absent one for ever). A device such as
        ``/dev/full`` answers at once, and is written in place."""
        try:
            return os.stat(self.path).st_mode
        except FileNotFoundError:
            return None

    def _lock(self, wait: bool, mode: int | None) -> int | None:
        """The lock file's descriptor, locked; None for a path (of ``mode``) that is not a
        regular file. BlockingIOError when ``wait`` is False and another writer holds it;
        OSError when the lock file is not a regular file."""
        if mode is not None and not stat.S_ISREG(mode):
            return None
        lock = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK,
                       PRIVATE_MODE)
        try:
            if not stat.S_ISREG(os.fstat(lock).st_mode):  # a pipe put there: no lock of ours
                raise OSError(errno.EINVAL, f"{self.lock_path} is not a regular file")
            fcntl.flock(lock, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BaseException:
            os.close(lock)
            raise
        return lock

    def _full(self, adding: int) -> bool:
        """Whether ``adding`` bytes would take the file past ``max_bytes`` (an empty file
        takes any record: one larger than ``max_bytes`` is written whole, alone)."""
        if self.max_bytes is None:
            return False
        try:
            size = os.stat(self.path).st_size
        except FileNotFoundError:
            return False
        return size > 0 and size + adding > self.max_bytes

    def _rotate(self) -> None:
        """``path.i`` to ``path.i+1`` from the oldest kept, then ``path`` to ``path.1``."""
        for index in range(self.rotated_files - 1, 0, -1):
            with contextlib.suppress(FileNotFoundError):
                os.replace(self.rotated(index), self.rotated(index + 1))
        os.replace(self.path, self.rotated(1))

    def rotated(self, index: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{index}")


def open_private(path: Path) -> int:
    """``path`` opened to append (made with ``PRIVATE_MODE`` when absent; made private when
    others could read it)."""
    fd = os.open(path, OPEN_APPEND, PRIVATE_MODE)
    try:
        keep_private(fd, path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def keep_private(fd: int, path: Path) -> None:
    """A regular file that its group or others may read or write is made ``PRIVATE_MODE``
    (logged): ``O_CREAT``'s mode applies only to a file it makes, so one made before kept its
    0644. Not a regular file (a pipe, ``/dev/stdout``): left as it is. One this user may not
    change (another user's, that it may write): left as it is, logged once per file, nothing
    raised (its records still go in; its mode is its owner's to set)."""
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode) or not mode & 0o077:
        return
    try:
        os.fchmod(fd, PRIVATE_MODE)
    except PermissionError:  # EPERM or EACCES: not this user's file
        if str(path) not in _not_ours:
            _not_ours.add(str(path))
            log.warning("audit file %s could be read by other users (mode %o) and is not this "
                        "user's to make %o: written as it is (its owner sets its mode)", path,
                        stat.S_IMODE(mode), PRIVATE_MODE)
        return
    log.warning("audit file %s could be read by other users (mode %o): made %o", path,
                stat.S_IMODE(mode), PRIVATE_MODE)


_not_ours: set[str] = set()
"""Files ``keep_private`` could not make private, each logged once (the audit file, its
rotations and lock file: a few paths)."""


def _open_to_append(path: Path, readable: bool) -> int:
    """``path`` opened to append; also to read (its last byte: ``_ends_line``) when
    ``readable`` (a regular file, or none yet) and this user may read it. Never a pipe: its
    reader it would become."""
    if readable:
        with contextlib.suppress(PermissionError):  # a file this user may only write
            return os.open(path, OPEN_READ_APPEND, PRIVATE_MODE)
    return os.open(path, OPEN_APPEND, PRIVATE_MODE)


def _ends_line(fd: int, size: int, unknown: bool) -> bool:
    """Whether the file of ``size`` bytes ends in a newline (``unknown`` when it cannot be
    read: a file opened to write only)."""
    try:
        return os.pread(fd, 1, size - 1) in (b"\n", b"")
    except OSError:
        return unknown


def _cut(fd: int, size: int) -> bool:
    """The file cut back to ``size`` bytes; False when it could not be."""
    try:
        os.ftruncate(fd, size)
    except OSError:
        return False
    return True


def _write_all(fd: int, data: bytes) -> None:
    """All of ``data`` (a write to a regular file may be short; under the lock, the rest still
    follows it)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
