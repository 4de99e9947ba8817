"""YAML files validated by pydantic models, with errors located by file, line and field.

Policies and the gateway's config both load through ``load_yaml_model``, so a person fixing a
file always gets ``file:line: field: message``.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from vilmo.errors import VilmoError

ModelT = TypeVar("ModelT", bound=BaseModel)
MAX_DEPTH = 64
"""Deepest nesting a file may have (a policy or config needs a handful of levels)."""
MERGE_TAG = "tag:yaml.org,2002:merge"
MAX_FILE_BYTES = 4 * 1024 * 1024
"""The largest file read (a policy or config is a few kilobytes): a larger one, or one that is
not a regular file (``/dev/zero``, a pipe), is refused before it is read, not read forever."""


@dataclass(frozen=True, slots=True)
class FileIssue:
    """One problem in a YAML file, located for a person to fix."""

    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.field or '(file)'}: {self.message}"


class FileError(VilmoError, ValueError):
    """A YAML file that cannot be used; ``issues`` lists every problem found."""

    def __init__(self, issues: list[FileIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


def load_yaml_model(path: str | Path, model: type[ModelT],
                    error: type[FileError] = FileError) -> ModelT:
    """Read a YAML mapping and validate it; raise ``error`` naming file, line and field.

    Every issue found is reported together: duplicate keys (which YAML would otherwise resolve
    silently, the last one winning) and the model's validation errors."""
    path = Path(path)
    root, data, issues = _read(path, error)
    if not isinstance(data, dict):
        raise error([FileIssue(str(path), 1, "", "expected a YAML mapping at the top level")])
    try:
        validated = model.model_validate(data)
    except ValidationError as exc:
        issues += [FileIssue(str(path), line_of(root, err["loc"]), dotted(err["loc"]), err["msg"])
                   for err in exc.errors()]
    except RecursionError:
        issues.append(FileIssue(str(path), None, "", "nested too deeply to validate"))
    if issues:
        raise error(issues) from None
    return validated


def _read(path: Path, error: type[FileError],
          ) -> tuple[yaml.Node | None, Any, list[FileIssue]]:
    """The file's node tree (for locating issues), its data and its duplicate keys, or ``error``
    with one issue.

    Duplicates are found before the document is constructed: constructing flattens merge keys
    (``<<: *anchor``) by splicing the merged pairs into the mapping's node, after which a key
    that overrides a merged one would look written twice."""
    raw = _read_bytes(path, error)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad_line = raw[:exc.start].count(b"\n") + 1
        raise error([FileIssue(str(path), bad_line, "", f"not UTF-8 text (byte "
                                                    f"0x{raw[exc.start]:02x})")]) from None
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        duplicates = duplicate_keys(root, str(path))
        return root, loader.construct_document(root) if root is not None else None, duplicates
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise error([FileIssue(str(path), line, "", f"invalid YAML: {yaml_problem(exc)}")],
                    ) from None
    except RecursionError:
        raise error([FileIssue(str(path), None, "", f"invalid YAML: nested deeper than "
                                                    f"{MAX_DEPTH} levels")]) from None
    finally:
        loader.dispose()


def _read_bytes(path: Path, error: type[FileError]) -> bytes:
    """The file's bytes, or ``error`` for a file that is not a regular file or is larger than
    ``MAX_FILE_BYTES``, or that cannot be opened or read (missing, a directory, a socket, no
    permission: one clear issue, not an ``OSError``'s traceback). Opened without blocking (a
    pipe would wait for a writer) and without becoming a controlling terminal (a tty), and
    checked on the open descriptor, so a path swapped after a check cannot slip past it; the
    descriptor is closed on every path (a directory's leaked one, as ``fdopen`` refused it)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise error([FileIssue(str(path), None, "", f"cannot be opened: {_why(exc)}")]) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise error([FileIssue(str(path), None, "", "not a regular file")])
        with os.fdopen(fd, "rb", closefd=False) as file:
            raw = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise error([FileIssue(str(path), None, "", f"cannot be read: {_why(exc)}")]) from None
    finally:
        os.close(fd)
    if len(raw) > MAX_FILE_BYTES:
        raise error([FileIssue(str(path), None, "", f"larger than {MAX_FILE_BYTES} bytes, "
                                                    "the most a YAML file may be")])
    return raw


def _why(exc: OSError) -> str:
    """An ``OSError``'s reason without its path (the issue names the file)."""
    return exc.strerror or type(exc).__name__


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing nesting deeper than ``MAX_DEPTH`` as soon as it is met:
    composing is recursive, and a few thousand brackets would otherwise spend seconds reaching
    Python's recursion limit (a RecursionError, not a YAML error)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_DEPTH} levels", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def duplicate_keys(root: yaml.Node | None, file: str) -> list[FileIssue]:
    """An issue for every mapping key given twice in the same mapping (YAML keeps the last
    silently: a rule written twice is served as its later copy), at the repeated key's line.

    Only keys written in the mapping itself count: a key brought in by a merge key may be
    overridden, so ``root`` must be the composed tree, before construction flattens merges."""
    issues: list[FileIssue] = []
    seen_nodes: set[int] = set()  # an alias shares its node: walk each node once
    todo: list[tuple[yaml.Node, tuple[str, ...]]] = [(root, ())] if root is not None else []
    while todo:
        node, where = todo.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            todo += [(item, (*where, str(i))) for i, item in enumerate(node.value)]
        elif isinstance(node, yaml.MappingNode):
            first: dict[tuple[str, str], int] = {}
            for key, value in node.value:
                if not isinstance(key, yaml.ScalarNode) or key.tag == MERGE_TAG:
                    continue
                line = key.start_mark.line + 1
                if (key.tag, key.value) in first:
                    issues.append(FileIssue(file, line, ".".join((*where, key.value)),
                                            f"duplicate key {key.value!r} (first given at line "
                                            f"{first[key.tag, key.value]}); give it once"))
                else:
                    first[key.tag, key.value] = line
                todo.append((value, (*where, key.value)))
    return sorted(issues, key=lambda i: i.line or 0)


def dotted(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as a dotted field path ('values.mft.care.weight')."""
    return ".".join(str(p) for p in loc if p != "[key]")


def yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's message without its quote of the lines around the error: a config line may
    hold a secret (an upstream's ``api_key``), and start-up errors go to logs."""
    said = [str(part) for part in (getattr(exc, "context", None), getattr(exc, "problem", None))
            if part]
    mark = getattr(exc, "problem_mark", None)
    where = f" (column {mark.column + 1})" if mark is not None else ""
    return ", ".join(said) + where if said else type(exc).__name__


def line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """The 1-based line of the YAML node a pydantic error location points at."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == str(part):
                    node, line = value, value.start_mark.line + 1
                    if loc[-1] == "[key]":
                        line = key.start_mark.line + 1
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line
