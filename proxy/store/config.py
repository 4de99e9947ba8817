"""The ``store:`` section of the gateway config.

Without ``url`` the gateway keeps its state in an embedded SQLite file (``path``); with
``url: redis://host:port/db`` every replica pointed at the same Redis shares keys, limits and the
audit trail (the stream ``<prefix>:audit``). The password goes in the URL
(``redis://:password@host:6379/0``) or the whole URL is ``os.environ/NAME``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from proxy.config_keys import ENV_PREFIX

DEFAULT_STATE_DIR = Path("~/.local/state/vilmo")
"""XDG's state directory: the default for the SQLite file and the audit spool.

Not the config's folder: that is often read-only (a mounted ConfigMap, /etc) or a checkout under
version control, and state written there is easy to commit or lose. XDG state survives upgrades
and is per user. Set ``store.path`` to put it elsewhere (in containers: a volume).
"""

DEFAULT_AUDIT_MAX_RECORDS = 100_000
"""The trail's default length. With each record's texts bounded (``proxy.trail``: 16,000
characters) that is about 2 GB of plain text at most, 10 GB of the worst text, and a client with
a key cannot grow the trail past it within the retention time."""


class StoreSettings(BaseModel):
    """Where the gateway's state lives and how it behaves when that place is unreachable."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # .inf is no bound

    url: str | None = Field(
        None, description="redis://[:password@]host:port/db (or rediss://, or os.environ/NAME); "
                          "unset: the embedded SQLite store at `path`.")
    prefix: str = Field("vilmo", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$",
                        description="Namespace of every Redis key; the audit stream is "
                                    "`<prefix>:audit`.")
    path: Path = Field(DEFAULT_STATE_DIR / "state.db",
                       description="The embedded store's SQLite file (WAL mode).")
    spool_dir: Path | None = Field(
        None, description="Where audit records wait while the store is unreachable; "
                          "default: `<path's folder>/spool`.")
    audit_retention_days: float | None = Field(
        30.0, gt=0, description="Audit records older than this are deleted; null: kept.")
    audit_max_records: int | None = Field(
        DEFAULT_AUDIT_MAX_RECORDS, gt=0,
        description="At most this many audit records are kept (approximately, on Redis; on "
                    "SQLite the excess goes at the next prune, every 5 minutes); null: no "
                    "bound by count (only `audit_retention_days`).")
    limits_on_error: Literal["fail_open", "fail_closed"] = Field(
        "fail_open", description="When the store is unreachable: admit every request "
                                 "(fail_open) or refuse with 429 (fail_closed).")
    instruction_cache_ttl_s: float = Field(3600.0, gt=0)
    embedding_cache_ttl_s: float = Field(86400.0, gt=0)
    cache_max_entries: int = Field(100_000, gt=0, description="Per cache.")
    cache_max_value_bytes: int = Field(1 << 20, gt=0,
                                       description="Larger values are not cached.")
    audit_queue: int = Field(10_000, gt=0, description="Records waiting for the background "
                                                       "writer; beyond it they go to the spool.")
    timeout_s: float = Field(2.0, gt=0, description="Per Redis command / SQLite lock wait.",
                             le=60.0)
    retry_s: float = Field(1.0, gt=0, description="After a failure: how long requests skip the "
                                                  "store (limits degrade at once) and how often "
                                                  "the spool is retried.", le=3600.0)

    @field_validator("url")
    @classmethod
    def _resolve_url(cls, url: str | None) -> str | None:
        if url is not None and url.startswith(ENV_PREFIX):
            name = url[len(ENV_PREFIX):]
            resolved = os.environ.get(name)
            if not resolved:
                raise ValueError(f"environment variable {name} is not set")
            url = resolved
        if url is not None and not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        if url is not None:
            _parses(url)
        return url

    @property
    def retention_s(self) -> float | None:
        return None if self.audit_retention_days is None else self.audit_retention_days * 86400

    def state_path(self) -> Path:
        """``path`` with ``~`` expanded."""
        return self.path.expanduser()

    def spool_path(self) -> Path:
        return (self.spool_dir or self.state_path().parent / "spool").expanduser()


def _parses(url: str) -> None:
    """Whether redis-py can read ``url`` (a worker opens it at start-up); its own message may
    quote parts of the URL, so one that never does is raised."""
    from redis.connection import parse_url

    try:
        parse_url(url)  # type: ignore[no-untyped-call]
    except ValueError:
        raise ValueError("not a valid Redis URL: expected redis://[:password@]host[:port]/db, "
                         "rediss://... or unix:///path (the URL is not shown: it may hold a "
                         "password)") from None
