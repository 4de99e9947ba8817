"""A folder of policy files, kept current while the gateway runs.

Files are re-read when their stamp (modification time, size, inode and status-change time)
changes, checked at most every ``reload_interval`` seconds on access, so no watcher is needed.
The inode and ctime catch a same-size replacement that keeps the old mtime (``cp -p``,
``tar -x``, ``rsync -t``): a rename gives a new inode, an in-place write a new ctime, and no
tool can set the ctime back. A changed (or new)
file is loaded only once it has settled: the pass that first sees its new stamp only
notes it, and a later pass at least ``settle_s`` seconds on that finds the same stamp loads it
(a file whose last change is older than ``settle_s``, ``reload_interval`` and ``MIN_QUIET_S``
is settled on first sight: one added while the gateway was idle); meanwhile its last good
version is served. A file saved in place (truncated, then written in
pieces) is otherwise read mid-write, and a prefix of a policy is often a valid policy with its
block rules missing. Saving by atomic rename (write a temporary file, then ``mv`` it over) is
the way to make an edit that is never seen half-written. A file that fails to
load, whatever the failure (invalid YAML, a policy error, its generator weights unreadable),
keeps its last good version in service, the failure is logged on one line naming the file, and
the file is not read again until it changes; at start-up it is skipped, except that a missing
default stops start-up. When several files name the same policy, the file named after it
(``default.yaml`` for ``default``) serves it whenever it is there, so every replica and every
restart serves the same file; among other files the name stays with the file serving it (a
copy left as ``a-draft.yaml`` does not take it over), else the first in sorted order. Every
other claim is logged as ignored.
The default policy never goes away once loaded: when its file is removed (or renamed, or its
``name`` changed) its last good version stays the default, logged as an error on each reload
that finds the folder changed while it is gone, so callers without a policy are served as
before. A file that vanishes between listing and reading (a remove+create by an editor, rsync or
a ConfigMap update) keeps its previous version on that pass; the next pass reads it again.
Passes run one at a time, except that one taking long can be abandoned (``abandon_pass``) for
later passes to run alongside it; each pass works on a copy of the state as it began and
merges its result file by file, dropping its read of any file a later pass committed since.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vilmo.errors import VilmoError
from vilmo.policy import Policy, PolicyError, load_policy

SHIPPED_POLICY_DIR = Path(__file__).resolve().parent / "policies"
"""The policies that ship inside the package (``default``, ``strict-care-fairness``, ...)."""

log = logging.getLogger(__name__)

PolicyFileStamp = tuple[int, int, int, int]  # (mtime_ns, size, inode, ctime_ns)


@dataclass(slots=True)
class _Entry:
    stamp: PolicyFileStamp
    policy: Policy | None  # the last good version; None if the file never loaded


@dataclass(slots=True)
class _State:
    """What a reload pass reads and writes: each file's entry, the broken ones, the ignored
    claims (file -> its name, the file serving it), and changed stamps noted (stamp, first
    seen)."""
    files: dict[Path, _Entry]
    broken: set[Path]
    ignored: dict[Path, tuple[str, Path]]
    pending: dict[Path, tuple[PolicyFileStamp, float]]


class UnknownPolicy(VilmoError, KeyError):
    """No policy of that name is loaded."""


class PolicyStore:
    """Policies by name from one folder, reloaded when their files change."""

    def __init__(self, directory: str | Path, default_name: str, reload_interval: float = 1.0,
                 check: Callable[[Policy], None] | None = None, *, settle_s: float = 0.0,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], int] = time.time_ns) -> None:
        self.directory = Path(directory)
        self.check = check
        """Runs on every loaded policy (e.g. loading its generator weights); an error there
        counts as a broken file."""
        self.default_name = default_name
        self.reload_interval = reload_interval
        self.settle_s = settle_s
        """How long a changed file's stamp must stay the same before it is loaded, besides
        being seen on two passes (which ``reload_interval`` already keeps apart)."""
        self._clock = clock
        self._wall_clock = wall_clock  # nanoseconds, as file stamps are: a stamp's age
        self._started = False  # the start-up pass loads what it finds: there is no last good
        self._pending: dict[Path, tuple[PolicyFileStamp, float]] = {}  # stamp, first seen
        self._files: dict[Path, _Entry] = {}
        self._by_name: dict[str, Policy] = {}
        self._broken: set[Path] = set()  # files whose current version failed to load
        self._served_from: dict[str, Path] = {}  # each served name's file
        self._ignored: dict[Path, tuple[str, Path]] = {}  # file -> (its name, the file serving it)
        self._checked_at = float("-inf")
        self._refreshing = threading.Lock()  # one pass at a time (a server runs them off its loop)
        self._commit = threading.Lock()  # held briefly: the state a pass reads and merges, below
        self._passes_begun = 0  # each pass's token, taken when it begins
        self._owner: int | None = None  # the token of the pass in flight, unless abandoned
        self._reading: dict[int, Path | None] = {}  # passes in flight: the file each reads
        self._abandoned: set[int] = set()  # abandoned passes still in flight
        self.refresh(force=True)
        self._started = True
        if default_name not in self._by_name:
            broken = "".join(f"; {p} failed to load (see the log)" for p in sorted(self._broken))
            raise UnknownPolicy(
                f"default policy {default_name!r} is not among the policies in "
                f"{self.directory} ({', '.join(sorted(self._by_name)) or 'none loaded'}{broken})")

    def get(self, name: str | None = None) -> Policy:
        """The named policy (the default when name is None), after a reload pass if one is
        due; UnknownPolicy if absent."""
        self.refresh()
        return self.loaded(name)

    def names(self) -> list[str]:
        self.refresh()
        return self.loaded_names()

    def loaded(self, name: str | None = None) -> Policy:
        """The named policy as last loaded, without a reload pass (a server runs those off its
        event loop, ``due`` says when); UnknownPolicy if absent."""
        key = self.default_name if name is None else name
        try:
            return self._by_name[key]
        except KeyError:
            raise UnknownPolicy(key) from None

    def loaded_names(self) -> list[str]:
        return sorted(self._by_name)

    def loaded_policies(self) -> dict[str, Policy]:
        """Every loaded policy by name, from one pass: listing the names and then getting each
        could meet a policy removed in between."""
        return dict(self._by_name)

    def due(self) -> bool:
        """Whether ``refresh`` would run a reload pass now."""
        return self._clock() - self._checked_at >= self.reload_interval

    def refresh(self, force: bool = False) -> None:
        """Re-read changed files. Reading a changed file (and ``check``) takes a while: a server
        runs this off its event loop and serves ``loaded`` meanwhile. Safe from any thread:
        passes run one at a time (but for one abandoned, see ``abandon_pass``), and readers see
        the old index or the new one, whole."""
        lock = self._acquire_refreshing()
        try:
            if not force and not self.due():
                return
            now = self._checked_at = self._clock()
            with self._commit:
                self._passes_begun += 1
                token = self._owner = self._passes_begun
                self._reading[token] = None
                seen = _State(dict(self._files), set(self._broken), dict(self._ignored),
                              dict(self._pending))
            try:
                self._reload(now, token, seen)
            finally:
                with self._commit:
                    del self._reading[token]
                    self._abandoned.discard(token)  # its file may be read again
                    if self._owner == token:
                        self._owner = None
        finally:
            lock.release()

    def _acquire_refreshing(self) -> threading.Lock:
        """The pass lock, held. A thread that waited on a lock that ``abandon_pass`` has since
        replaced waits again on the new one: passes run one at a time besides the abandoned."""
        while True:
            lock = self._refreshing
            lock.acquire()
            if lock is self._refreshing:
                return lock
            lock.release()

    def abandon_pass(self) -> bool:
        """Lets a later pass run while the one in flight takes long (its file's weights on a
        hung mount, or a slow load): later passes skip the file it is reading (its last good
        version stays meanwhile), and when it ends it commits what it read of each file no
        later pass has committed meanwhile (so a slow but finishing load is not lost, and an
        older read never replaces a newer one). So one that hangs stops no later pass. At most
        one abandoned pass in flight (threads stuck on a mount are bounded): False, and nothing
        done, while one is, or when no pass runs."""
        with self._commit:
            if self._abandoned or self._owner is None:
                return False
            self._abandoned.add(self._owner)
            self._owner = None
            self._refreshing = threading.Lock()  # the abandoned pass holds the old one
            return True

    def _stuck(self, token: int, path: Path) -> bool:
        """Whether an abandoned pass (not this one) is reading ``path``."""
        with self._commit:
            return any(self._reading.get(other) == path
                       for other in self._abandoned if other != token)

    def _note_reading(self, token: int, path: Path) -> None:
        with self._commit:
            self._reading[token] = path

    def _reload(self, now: float, token: int, seen: _State) -> None:
        """A pass over copies of the state as it began (``seen``), merged in at its end."""
        files, broken, ignored = dict(seen.files), set(seen.broken), dict(seen.ignored)
        listed = set(self._policy_files())
        present: dict[Path, PolicyFileStamp] = {}
        quiet_before: dict[Path, int] = {}  # each file's age is read with its stat, not later
        for path in listed:
            if (stamp := _stamp(path)) is not None:
                present[path], quiet_before[path] = stamp, self._quiet_ns()
        for path in list(files):
            if path in listed and path not in present:
                continue  # listed, gone before its stat: keep it; the next pass decides
            if path not in present:
                log.info("policy file %s removed", path)
                del files[path]
                broken.discard(path)
        pending = {p: noted for p, noted in seen.pending.items() if p in present}
        for path, stamp in sorted(present.items()):  # the same order on every replica
            entry = files.get(path)
            if entry is not None and entry.stamp == stamp:
                pending.pop(path, None)  # back as it was: nothing to load
                continue
            if self._stuck(token, path):
                continue  # an abandoned pass still reads it: its last good version meanwhile
            if self._started and not _settled(pending, path, stamp, now, self.settle_s,
                                              quiet_before[path]):
                continue  # maybe still being written: the last good version meanwhile
            if self._started and (again := _stamp(path)) != stamp:
                if again is not None:  # changed since its stat (a slow load before it): later
                    pending[path] = (again, self._clock())  # first seen now, not at the pass's start
                continue
            self._note_reading(token, path)
            previous = entry.policy if entry else None
            try:
                policy: Policy | None = load_policy(path)
                if self.check is not None and policy is not None:
                    self.check(policy)
                log.info("policy %r loaded from %s", policy.name if policy else None, path)
                broken.discard(path)
                ignored.pop(path, None)  # an edited file that is still ignored: say so
            except Exception as exc:  # noqa: BLE001 - one broken file must not stop the others
                log.error("policy file %s is broken; keeping its last good version (%s): %s",
                          path, previous.name if previous else "none", one_line(exc))
                policy = previous
                broken.add(path)
            files[path] = _Entry(stamp, policy)  # not read again until the file changes
        self._merge(seen, _State(files, broken, ignored, pending))

    def _quiet_ns(self) -> int:
        """How old a stamp's last change must be for a file to be settled on first sight."""
        quiet_s = max(self.settle_s, self.reload_interval, MIN_QUIET_S)
        return self._wall_clock() - int(quiet_s * 1e9)

    def _merge(self, seen: _State, done: _State) -> None:
        """Commits a pass's result file by file: what it changed of a file is kept unless a
        pass that ran alongside (after ``abandon_pass``) committed that file since this one
        began, which read it later (then this read is dropped, logged), or its file is gone by
        now (a pass that ran alongside saw it removed, and left no entry to compare: final
        review, a deleted policy served again until the next pass). The files are looked at
        before the commit lock is taken: a stat on a hung mount must not hold the readers."""
        gone = {path for path, after in done.files.items()
                if after is not None and after is not seen.files.get(path) and _stamp(path) is None}
        with self._commit:
            files, broken, ignored = dict(self._files), set(self._broken), dict(self._ignored)
            changed = False
            for path in sorted(seen.files.keys() | done.files.keys()):
                before, after = seen.files.get(path), done.files.get(path)
                if after is before:
                    continue
                if files.get(path) is not before:
                    log.warning("policy file %s was read by a later reload pass meanwhile; "
                                "this pass's read of it is dropped", path)
                    continue
                if path in gone:
                    log.info("policy file %s removed while it was read; its read is dropped", path)
                    continue
                changed = True
                if after is None:
                    del files[path]
                else:
                    files[path] = after
                if path in done.broken:
                    broken.add(path)
                else:
                    broken.discard(path)
                if path not in done.ignored:
                    ignored.pop(path, None)
            pending = dict(self._pending)
            for path in seen.pending.keys() | done.pending.keys():
                if (noted := done.pending.get(path)) != seen.pending.get(path):
                    if noted is None:
                        pending.pop(path, None)
                    else:
                        pending[path] = noted
            self._files, self._broken, self._ignored, self._pending = (
                files, broken, ignored, pending)
            if changed:
                self._by_name = self._with_default(self._index())

    def _with_default(self, by_name: dict[str, Policy]) -> dict[str, Policy]:
        """``by_name``, with the default's last good version when no file provides it now."""
        previous = self._by_name.get(self.default_name)
        if self.default_name in by_name or previous is None:
            return by_name
        log.error("the default policy %r is no longer in %s; serving its last good version "
                  "until a file provides it again", self.default_name, self.directory)
        return {**by_name, self.default_name: previous}

    def _policy_files(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.iterdir()
                      if p.suffix in (".yaml", ".yml") and p.is_file())

    def _index(self) -> dict[str, Policy]:
        """The policy of each name and its file. The file named after the policy serves it
        whenever it claims it: were the name to stay with a copy such as
        ``default-draft.yaml`` that took it over while ``default.yaml`` was briefly absent (a
        save-by-rename), ``default.yaml``'s edits would be ignored until restart, and replicas
        that did not reload meanwhile would serve another policy. Without such a file the name
        stays with the file already serving it (a newcomer must not take the policy over),
        else goes to the first path in sorted order. Every other claim is logged as ignored."""
        claims: dict[str, list[Path]] = {}
        for path, entry in sorted(self._files.items()):
            if entry.policy is not None:
                claims.setdefault(entry.policy.name, []).append(path)
        served: dict[str, Path] = {}
        for name, paths in claims.items():
            current = self._served_from.get(name)
            named = [p for p in paths if p.stem == name]  # default.yaml (or .yml) for default
            if named:
                chosen = named[0]  # paths are sorted: the same file on every replica
            else:
                chosen = current if current is not None and current in paths else paths[0]
            served[name] = chosen
            for path in paths:
                if path != chosen and self._ignored.get(path) != (name, chosen):
                    log.error("policy file %s also names policy %r, which %s serves; ignored "
                              "(give it another name to serve it)", path, name, chosen)
            if current is not None and current != chosen:
                log.warning("policy %r is now served from %s", name, chosen)
        self._ignored = {path: (name, served[name]) for name, paths in claims.items()
                         for path in paths if path != served[name]}
        self._served_from = served
        return {name: policy for name, path in served.items()
                if (policy := self._files[path].policy) is not None}  # always: a claim has one


MIN_QUIET_S = 1.0
"""The least time since a file's last change (its ctime: no tool sets it back; its mtime when
later) for it to be settled on the first pass that sees it, besides ``settle_s`` and
``reload_interval``: a file added or changed while the gateway was idle is served on the first
request naming it, not refused until a second pass."""


def _settled(pending: dict[Path, tuple[PolicyFileStamp, float]], path: Path,
             stamp: PolicyFileStamp, now: float, settle_s: float, quiet_before_ns: int) -> bool:
    """Whether ``path`` last changed before ``quiet_before_ns`` (wall clock), or had this
    stamp on an earlier pass at least ``settle_s`` ago (then taken from ``pending``); noted in
    ``pending`` otherwise."""
    if max(stamp[0], stamp[3]) <= quiet_before_ns:
        pending.pop(path, None)
        return True
    seen = pending.get(path)
    if seen is None or seen[0] != stamp:
        pending[path] = (stamp, now)
        return False
    if now - seen[1] < settle_s:
        return False
    del pending[path]
    return True


def one_line(exc: BaseException) -> str:
    """An error for one log line: a policy file's issues joined, else its type and message."""
    if isinstance(exc, PolicyError):
        return "; ".join(str(issue) for issue in exc.issues)
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def _stamp(path: Path) -> PolicyFileStamp | None:
    """The file's (mtime, size, inode, ctime); None when it is gone (removed since it was
    listed). mtime and size alone miss a same-size copy that keeps the old mtime."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns)
