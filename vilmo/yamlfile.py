"""YAML files validated by pydantic models, with errors located by file, line and field.

Policies and the gateway's config both load through ``load_yaml_model``, so a person fixing a
file always gets ``file:line: field: message``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from vilmo.errors import VilmoError

ModelT = TypeVar("ModelT", bound=BaseModel)


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
    """Read a YAML mapping and validate it; raise ``error`` naming file, line and field."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise error([FileIssue(str(path), line, "", f"invalid YAML: {yaml_problem(exc)}")],
                    ) from None
    if not isinstance(data, dict):
        raise error([FileIssue(str(path), 1, "", "expected a YAML mapping at the top level")])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        issues = [FileIssue(str(path), line_of(root, err["loc"]), dotted(err["loc"]), err["msg"])
                  for err in exc.errors()]
        raise error(issues) from None


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
