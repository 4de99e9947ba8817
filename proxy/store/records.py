"""The typed records the store keeps and returns, and its errors.

They are plain frozen dataclasses so the gateway, the admin API and the CLI share one shape and
nothing mutable leaks out of a backend.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from proxy.wellformed import LONE_SURROGATE

JsonObject = Mapping[str, object]
"""A JSON object as decoded by ``json.loads`` (the audit record's free-form part)."""

CacheName = Literal["instruction", "embedding"]
"""The caches the store keeps; each has its own TTL and size bound."""

LimitReason = Literal["rpm", "tpm"]


class StoreError(Exception):
    """Base of the store's errors."""


class StoreUnavailable(StoreError):
    """The backend cannot be reached (Redis down, SQLite locked past its timeout).

    Backends map their driver's connection errors to this one type where they enter, so callers
    decide how to degrade without knowing which backend is configured.
    """


class StoreFull(StoreUnavailable):
    """The backend answered, but refuses writes for want of memory (Redis's ``OOM`` at
    ``maxmemory`` with ``noeviction``): it fails fast and is counted like any unavailability,
    but trips no breaker (``Store._call``), since the limit scripts still run there."""


class InvalidCursor(StoreError, ValueError):
    """An ``after`` cursor this backend did not issue (the admin API answers 400)."""


@dataclass(frozen=True, slots=True)
class VirtualKey:
    """A client key as stored: never its secret, only what the gateway needs to serve it."""

    id: str
    name: str
    policy: str | None = None
    profile: str | None = None
    """A value profile (a policy's name), when bound: its weights, not the key's policy's,
    score the key's compliance (Σ w·S on the dashboard); thresholds and actions stay the
    policy's."""
    rpm: int | None = None
    tpm: int | None = None
    created_at: float = 0.0
    revoked_at: float | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def public(self) -> dict[str, object]:
        """The admin API's view of the key (``GET /admin/keys``): no key value, ever."""
        return {"id": self.id, "name": self.name, "policy": self.policy,
                "profile": self.profile, "rpm": self.rpm, "tpm": self.tpm,
                "created_at": self.created_at, "revoked_at": self.revoked_at}


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A key just created: the only object that ever holds the plaintext ``key``."""

    record: VirtualKey
    key: str

    def public(self) -> dict[str, object]:
        """The ``POST /admin/keys`` reply (201), exactly the contract's fields: the only time
        the key is shown."""
        r = self.record
        return {"id": r.id, "name": r.name, "key": self.key, "policy": r.policy, "rpm": r.rpm,
                "tpm": r.tpm}


@dataclass(frozen=True, slots=True)
class LimitDecision:
    """Whether a request may go ahead now; when not, how long until it may (``Retry-After``)."""

    allowed: bool
    retry_after_s: int = 0
    reason: LimitReason | None = None
    degraded: bool = False
    """The store was unreachable and ``limits_on_error`` decided instead of the counters."""
    reserved: int = 0
    """Tokens ``reserve_tokens`` counted for the request (to settle with ``charge_tokens``)."""
    reserved_at: int = 0
    """The second (the store's clock) they were counted in."""


ALLOWED = LimitDecision(True)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One request in the audit trail.

    ``id`` is the request id and makes writes idempotent: a record replayed from the spool is
    never stored twice. The named fields are the ones the trail is filtered by; ``data`` holds
    the rest of the record as the gateway builds it (see ``proxy.store.negatives`` for the
    fields the negatives export reads).
    """

    id: str
    ts: float
    """When the request started (Unix seconds); the time filters apply to it."""
    key: str = ""
    """The client key's name (never the key itself)."""
    key_id: str | None = None
    """The virtual key's id: names the caller where ``key`` (a name) may be shared; None for a
    config key, a request without a key, and records written before the field existed."""
    policy: str = ""
    model: str = ""
    action: str = ""
    values: tuple[str, ...] = ()
    """The values the request or reply was flagged for."""
    data: JsonObject = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "ts": self.ts, "key": self.key, "key_id": self.key_id,
                "policy": self.policy,
                "model": self.model, "action": self.action, "values": list(self.values),
                "data": dict(self.data)}

    def dumps(self) -> str:
        """One JSON line (no newline), as the spool and the export write it. Always valid
        UTF-8 once encoded: a lone surrogate (which no store or file can take) is written as
        its ``\\udXXX`` escape, which ``loads`` reads back as it was. Only the surrogates are
        escaped: escaping the whole line (``ensure_ascii``) wrote every other non-ASCII
        character as six or twelve bytes, doubling a bounded record's size."""
        line = json.dumps(self.to_json(), separators=(",", ":"), ensure_ascii=False)
        if line.isascii() or not LONE_SURROGATE.search(line):
            return line
        # a surrogate is a character only inside a JSON string, where its escape means it
        return LONE_SURROGATE.sub(lambda found: f"\\u{ord(found.group()):04x}", line)

    @classmethod
    def from_json(cls, obj: JsonObject) -> AuditRecord:
        """The inverse of ``to_json``; ValueError when a field has the wrong type."""
        values = obj.get("values", [])
        data = obj.get("data", {})
        if not isinstance(values, list) or not isinstance(data, dict):
            raise ValueError("audit record: values must be a list and data an object")  # noqa: TRY004
        ts = obj.get("ts")
        if not isinstance(ts, int | float):
            raise ValueError("audit record: ts must be a number")  # noqa: TRY004
        key_id = obj.get("key_id")
        if key_id is not None and not isinstance(key_id, str):
            raise ValueError("audit record: key_id must be a string or null")
        return cls(id=_text(obj, "id", required=True), ts=float(ts), key=_text(obj, "key"),
                   key_id=key_id, policy=_text(obj, "policy"), model=_text(obj, "model"),
                   action=_text(obj, "action"), values=tuple(str(v) for v in values),
                   data=data)

    @classmethod
    def loads(cls, line: str | bytes) -> AuditRecord:
        obj = json.loads(line)
        if not isinstance(obj, dict):
            raise ValueError("audit record: not a JSON object")  # noqa: TRY004
        return cls.from_json(obj)


def _text(obj: JsonObject, name: str, required: bool = False) -> str:
    value = obj.get(name, None if required else "")
    if not isinstance(value, str) or (required and not value):
        raise ValueError(f"audit record: {name} must be a {'non-empty ' * required}string")
    return value


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Filters of ``GET /admin/audit``; every set field must match (``value``: one of the
    record's values). ``after`` is the ``next`` cursor of the previous page."""

    since: float | None = None
    until: float | None = None
    key: str | None = None
    key_id: str | None = None
    policy: str | None = None
    value: str | None = None
    action: str | None = None
    model: str | None = None
    limit: int = 50
    after: str | None = None

    def matches(self, record: AuditRecord) -> bool:
        """Whether the record passes every filter except paging (backends that cannot filter
        in the query itself, like a Redis Stream, filter with this)."""
        return ((self.since is None or record.ts >= self.since)
                and (self.until is None or record.ts < self.until)
                and (self.key is None or record.key == self.key)
                and (self.key_id is None or record.key_id == self.key_id)
                and (self.policy is None or record.policy == self.policy)
                and (self.action is None or record.action == self.action)
                and (self.model is None or record.model == self.model)
                and (self.value is None or self.value in record.values))


MAX_PAGE = 1000
"""The largest ``limit`` a page may ask for; larger ones are clamped."""


@dataclass(frozen=True, slots=True)
class AuditPage:
    """One page of the trail, newest first; ``next`` is None on the last page."""

    data: tuple[AuditRecord, ...]
    next: str | None

    def to_json(self) -> dict[str, object]:
        """The ``GET /admin/audit`` body: ``{"data": [...], "next": cursor or null}``."""
        return {"data": [r.to_json() for r in self.data], "next": self.next}


@dataclass(frozen=True, slots=True)
class StoreHealth:
    """What the metrics layer reads: errors by operation, the spool, reachability."""

    backend: str
    reachable: bool
    errors: Mapping[str, int]
    audit_queue: int
    spool_depth: int
    degraded_limits: int
    """Limit decisions made by ``limits_on_error`` because the store was unreachable."""
