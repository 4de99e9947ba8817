"""The keys the config holds, a client's (``auth.keys``), the admin's and the metrics': how
long they must be, and how an ``os.environ/NAME`` reference to one is resolved.

Every one needs ``MIN_KEY_CHARS``: a client key had no minimum, and a 2-character one was found
by guessing over ``/v1/models`` in 2.4 s (1,296 tries, none throttled)."""

from __future__ import annotations

import os
from typing import Annotated

from pydantic import AfterValidator

from vilmo.yamlfile import FileIssue

ENV_PREFIX = "os.environ/"
MIN_KEY_CHARS = 16
"""The shortest key (the key itself: an ``os.environ/NAME`` reference is measured once
resolved, ``resolved_key``)."""


def check_length(key: str) -> None:
    if len(key) < MIN_KEY_CHARS:
        raise ValueError(f"the key must have at least {MIN_KEY_CHARS} characters (a shorter "
                         "one is found by guessing; make one with `openssl rand -hex 24`)")


def key_long_enough(key: str) -> str:
    """A key written in the file is measured here; a reference once resolved."""
    if not key.startswith(ENV_PREFIX):
        check_length(key)
    return key


ConfigKey = Annotated[str, AfterValidator(key_long_enough)]


def missing(source: str, field: str, value: str) -> FileIssue:
    return FileIssue(source, None, field,
                     f"environment variable {value[len(ENV_PREFIX):]} is not set")


def resolved_key(reference: str, field: str, source: str,
                 issues: list[FileIssue]) -> str | None:
    """The key an ``os.environ/NAME`` reference names; None, with its issue, when the variable
    is unset or empty or the key too short."""
    resolved = os.environ.get(reference[len(ENV_PREFIX):])
    if not resolved:
        issues.append(missing(source, field, reference))
        return None
    try:
        check_length(resolved)
    except ValueError as error:
        issues.append(FileIssue(source, None, field, str(error)))
        return None
    return resolved
