"""The Redis backend: state shared by every replica pointed at one Redis.

Keys (all under ``<prefix>:``): ``key:<id>`` (hash: the record, salt and digest), ``keys`` (set
of ids), ``usage:<id>:rpm`` / ``usage:<id>:tpm`` (hashes of per-second counts), ``cache:<name>:<h>``
with the index ``cache:<name>`` (sorted set), ``audit`` (the stream, a contract) and
``audit:ids:<day>`` (the ids written, for idempotency: each day's set expires ``ID_SET_TTL_S``
after its last new id, or as long as the records are kept (retention, plus two days) when that
is longer, so with no retention they still do not grow without bound).
Lossless audit across a Redis crash needs its AOF with ``appendfsync always``; with
``everysec`` the last second of writes may vanish on a crash of Redis itself.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.commands.core import Script
from redis.retry import Retry

from proxy.store import keys, redis_lua
from proxy.store.config import StoreSettings
from proxy.store.records import (
    AuditPage,
    AuditQuery,
    AuditRecord,
    CacheName,
    InvalidCursor,
    IssuedKey,
    LimitDecision,
    StoreFull,
    StoreUnavailable,
    VirtualKey,
)

log = logging.getLogger("vilmo.store")

SCAN_LIMIT = 20_000
"""Stream entries one audit page reads at most; a sparse filter returns a short page with a
``next`` cursor rather than scanning the whole trail in one request."""
CLOCK_SLACK_S = 300
"""How far a gateway's clock (record ``ts``) may be ahead of Redis's (stream ids)."""
_CURSOR = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}$")
MAX_ID_PART = 2**64 - 1
"""The largest part of a stream id (``<ms>-<seq>``); Redis refuses a larger one as ERR."""
ID_SET_TTL_S = 7 * 86400
"""The least an audit id set lives: a replay of a record already written (a spool not yet
truncated when its process died, a batch retried after a timeout) comes back within it. With
``audit_retention_days`` longer than this, the sets live as long as the records (plus two
days)."""
_KEY_FIELDS = ("name", "policy", "profile", "rpm", "tpm", "created_at", "revoked_at")


BUG_CODES = frozenset({"ERR", "WRONGTYPE", "NOSCRIPT", "EXECABORT", "CROSSSLOT"})
"""Redis error codes that mean a bug here (a script's error, a wrong command or key type):
they propagate. Every other error Redis answers with (OOM at ``maxmemory``, BUSY, NOPERM,
NOAUTH, READONLY, LOADING, MASTERDOWN, MISCONF, ...) is the store being unusable right now."""


@contextmanager
def unavailable_on_connection_errors() -> Iterator[None]:
    """Redis's errors enter here: lost connections, timeouts and every error reply that says
    the server cannot serve now (``BUG_CODES`` aside) are ``StoreUnavailable``, so callers
    degrade (limits by ``limits_on_error``, audit records to the spool, the admin API 503) and
    the failure is counted; a client-side ``DataError`` or a bug's reply propagates."""
    try:
        yield
    except redis.ResponseError as error:
        code = _error_code(error)
        if code in BUG_CODES:
            raise
        said = str(error) if str(error).startswith(code) else f"{code} {error}"
        unusable = StoreFull if code == "OOM" else StoreUnavailable
        raise unusable(f"redis: {said}") from error
    except redis.DataError:
        raise
    except redis.RedisError as error:
        raise StoreUnavailable(f"redis: {error}") from error


def _error_code(error: redis.ResponseError) -> str:
    """The reply's code (``OOM``, ``BUSY``...): the client strips the codes it knows into
    ``status_code``; the others lead the message."""
    known = getattr(error, "status_code", None)
    if known:
        return str(known)
    first = str(error).split(" ", 1)[0]
    return first if first.isupper() and first.isalpha() else "ERR"


class RedisBackend:
    name = "redis"

    def __init__(self, settings: StoreSettings) -> None:
        if not settings.url:
            raise ValueError("the Redis backend needs store.url")
        self._settings = settings
        self._p = settings.prefix
        # One quick retry covers a pooled connection that died with a Redis restart; more would
        # make every request wait while Redis is down.
        self.client = redis.Redis.from_url(
            settings.url, socket_timeout=settings.timeout_s,
            socket_connect_timeout=settings.timeout_s, retry=Retry(NoBackoff(), 1),
            decode_responses=False)
        self._admit = self.client.register_script(redis_lua.ADMIT)
        self._reserve = self.client.register_script(redis_lua.RESERVE)
        self._charge = self.client.register_script(redis_lua.CHARGE)
        self._unflagged: dict[str, Script] = {}
        """The limit scripts without their flags line, once a Redis 6 refused it."""
        self._append = self.client.register_script(redis_lua.AUDIT_APPEND)
        self._cache_set = self.client.register_script(redis_lua.CACHE_SET)
        self._create = self.client.register_script(redis_lua.CREATE_KEY)
        self._update = self.client.register_script(redis_lua.UPDATE_KEY)
        self._revoke = self.client.register_script(redis_lua.REVOKE_KEY)

    @property
    def audit_stream(self) -> str:
        return f"{self._p}:audit"

    # --- keys --------------------------------------------------------------------------------

    def create_key(self, name: str, policy: str | None, profile: str | None,
                   rpm: int | None, tpm: int | None) -> IssuedKey:
        while True:  # a taken id (2^-64 odds per key) just draws again
            minted = keys.mint_key()
            record = VirtualKey(minted.id, name, policy, profile, rpm, tpm, time.time())
            fields = {k: v for k, v in _key_fields(record).items() if v != ""}
            fields.update(salt=minted.salt, digest=minted.digest)
            args = [minted.id, *(item for pair in fields.items() for item in pair)]
            with unavailable_on_connection_errors():
                if self._create(keys=[self._key(minted.id), f"{self._p}:keys"], args=args):
                    return IssuedKey(record, minted.key)

    def list_keys(self) -> list[VirtualKey]:
        with unavailable_on_connection_errors():
            ids = sorted(_text(i) for i in self.client.smembers(f"{self._p}:keys"))
            with self.client.pipeline(transaction=False) as pipe:
                for key_id in ids:
                    pipe.hgetall(self._key(key_id))
                rows = pipe.execute()
        found = [_virtual_key(i, _row(row)) for i, row in zip(ids, rows, strict=True) if row]
        return sorted(found, key=lambda k: (k.created_at, k.id))

    def get_key(self, key_id: str) -> VirtualKey | None:
        with unavailable_on_connection_errors():
            row = _row(self.client.hgetall(self._key(key_id)))
        return _virtual_key(key_id, row) if row else None

    def find_key(self, presented: str) -> VirtualKey | None:
        parsed = keys.parse_key(presented)
        if parsed is None:
            return None
        with unavailable_on_connection_errors():
            row = _row(self.client.hgetall(self._key(parsed[0])))
        if not row or not keys.secret_matches(row["salt"], row["digest"], parsed[1]):
            return None
        record = _virtual_key(parsed[0], row)
        return record if record.active else None

    def revoke_key(self, key_id: str) -> bool:
        with unavailable_on_connection_errors():
            return bool(self._revoke(keys=[self._key(key_id)], args=[repr(time.time())]))

    def bind_key(self, key_id: str, policy: str | None,
                 profile: str | None) -> VirtualKey | None:
        return self._update_key(key_id, policy=policy or "", profile=profile or "")

    def set_limits(self, key_id: str, rpm: int | None, tpm: int | None) -> VirtualKey | None:
        return self._update_key(key_id, rpm=str(rpm or ""), tpm=str(tpm or ""))

    def _update_key(self, key_id: str, **fields: str) -> VirtualKey | None:
        args = [item for pair in fields.items() for item in pair]
        with unavailable_on_connection_errors():
            if not self._update(keys=[self._key(key_id)], args=args):
                return None
        return self.get_key(key_id)

    def _key(self, key_id: str) -> str:
        return f"{self._p}:key:{key_id}"

    # --- limits --------------------------------------------------------------------------------

    def _limits(self, script: Script, keys: list[str], args: list[int]) -> Any:
        """Run a limit script (``redis_lua.ALLOW_OOM``); on a Redis without script flags (6:
        the line does not compile), without the line from then on (at ``maxmemory`` its
        limits then degrade by ``limits_on_error``, as every store failure does)."""
        plain = self._unflagged.get(script.sha)
        if plain is None:
            try:
                return script(keys=keys, args=args)
            except redis.ResponseError as error:
                if "Error compiling script" not in str(error) or not str(
                        script.script).startswith(redis_lua.ALLOW_OOM):
                    raise
                log.warning("Redis refused the script flags (before Redis 7): the limits run "
                            "without allow-oom")
                text = str(script.script)[len(redis_lua.ALLOW_OOM):]
                plain = self._unflagged[script.sha] = self.client.register_script(text)
        return plain(keys=keys, args=args)

    def admit(self, key_id: str, rpm: int | None, tpm: int | None) -> LimitDecision:
        usage = f"{self._p}:usage:{key_id}"
        with unavailable_on_connection_errors():
            allowed, wait, reason = self._limits(self._admit, [f"{usage}:rpm", f"{usage}:tpm"],
                                                 [rpm or 0, tpm or 0])
        if allowed:
            return LimitDecision(True)
        return LimitDecision(False, int(wait), "tpm" if reason == b"tpm" else "rpm")

    def reserve_tokens(self, key_id: str, tpm: int, least: int, most: int) -> LimitDecision:
        with unavailable_on_connection_errors():
            allowed, amount, second = self._limits(
                self._reserve, [f"{self._p}:usage:{key_id}:tpm"], [tpm, least, most])
        if allowed:
            return LimitDecision(True, reserved=int(amount), reserved_at=int(second))
        return LimitDecision(False, int(amount), "tpm")

    def charge_tokens(self, key_id: str, tokens: int, refund: int = 0,
                      refund_at: int = 0) -> None:
        with unavailable_on_connection_errors():
            self._limits(self._charge, [f"{self._p}:usage:{key_id}:tpm"],
                         [max(0, tokens), max(0, refund), refund_at])

    # --- caches ----------------------------------------------------------------------------------

    def cache_get(self, cache: CacheName, key: str) -> bytes | None:
        with unavailable_on_connection_errors():
            value = self.client.get(f"{self._p}:cache:{cache}:{key}")
        return value.encode() if isinstance(value, str) else value

    def cache_set(self, cache: CacheName, key: str, value: bytes, ttl_s: float) -> None:
        with unavailable_on_connection_errors():
            self._cache_set(keys=[f"{self._p}:cache:{cache}:{key}", f"{self._p}:cache:{cache}"],
                            args=[value, max(1, int(ttl_s * 1000)),
                                  self._settings.cache_max_entries])

    # --- the audit trail ---------------------------------------------------------------------

    def append_audit(self, records: Sequence[AuditRecord]) -> int:
        retention = self._settings.retention_s
        id_ttl = int(max(ID_SET_TTL_S, retention + 2 * 86400 if retention is not None else 0))
        min_id = int((time.time() - retention) * 1000) if retention is not None else 0
        max_len = self._settings.audit_max_records or 0
        with (unavailable_on_connection_errors(),
              self.client.pipeline(transaction=False) as pipe):
            for record in records:
                day = time.strftime("%Y%m%d", time.gmtime(record.ts))
                self._append(keys=[self.audit_stream, f"{self.audit_stream}:ids:{day}"],
                             args=[record.id, record.dumps(), id_ttl, min_id, max_len],
                             client=pipe)
            written = pipe.execute()
        return sum(int(w) for w in written)

    def query_audit(self, query: AuditQuery) -> AuditPage:
        if query.after is not None and not (_CURSOR.match(query.after) and all(
                int(part) <= MAX_ID_PART for part in query.after.split("-"))):
            raise InvalidCursor(f"invalid cursor {query.after[:40]!r}")
        if query.after is not None and not any(int(p) for p in query.after.split("-")):
            return AuditPage((), None)  # before the first id (Redis refuses "(0-0" as ERR)
        end = f"({query.after}" if query.after else "+"
        start = "-" if query.since is None else str(min(MAX_ID_PART, max(0, int(
            (query.since - CLOCK_SLACK_S) * 1000))))  # a time past the ids: none are after it
        found: list[tuple[str, AuditRecord]] = []
        last, scanned, exhausted = "", 0, False
        with unavailable_on_connection_errors():
            while len(found) <= query.limit and not exhausted and scanned < SCAN_LIMIT:
                entries = self.client.xrevrange(self.audit_stream, end, start, count=500) or []
                exhausted = len(entries) < 500
                for entry_id, fields in entries:
                    scanned += 1
                    last = _text(entry_id or b"")
                    record = AuditRecord.loads(_row(fields or {})["record"])
                    if query.matches(record):
                        found.append((last, record))
                        if len(found) > query.limit:
                            break
                end = f"({last}"
        page = tuple(record for _, record in found[:query.limit])
        if len(found) > query.limit:
            return AuditPage(page, found[query.limit - 1][0])
        return AuditPage(page, None if exhausted else last)

    def prune(self) -> int:
        """Apply the retention (``MINID``) and the length bound (``MAXLEN``) to the stream, as
        every append does too: at ``maxmemory`` Redis refuses the appends (their script
        writes), so only this trims a full trail, and ``XTRIM`` frees memory where a write
        may not. Exact, not ``~``: it runs every few minutes, and a full Redis needs the
        memory back."""
        retention = self._settings.retention_s
        max_len = self._settings.audit_max_records
        removed = 0
        with unavailable_on_connection_errors():
            if retention is not None:
                removed += int(self.client.xtrim(
                    self.audit_stream, minid=max(0, int((time.time() - retention) * 1000)),
                    approximate=False))
            if max_len is not None:
                removed += int(self.client.xtrim(self.audit_stream, maxlen=max_len,
                                                 approximate=False))
        return removed

    def close(self) -> None:
        self.client.close()


def _key_fields(record: VirtualKey) -> dict[str, str]:
    return {"name": record.name, "policy": record.policy or "", "profile": record.profile or "",
            "rpm": str(record.rpm or ""), "tpm": str(record.tpm or ""),
            "created_at": repr(record.created_at), "revoked_at": ""}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _row(raw: Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    """A hash as text (the client returns bytes; the stub types allow str too)."""
    return {_text(k): _text(v) for k, v in raw.items()}


def _virtual_key(key_id: str, row: dict[str, str]) -> VirtualKey:
    text = {f: row[f] for f in _KEY_FIELDS if row.get(f)}
    return VirtualKey(
        id=key_id, name=text.get("name", ""), policy=text.get("policy"),
        profile=text.get("profile"),
        rpm=int(text["rpm"]) if "rpm" in text else None,
        tpm=int(text["tpm"]) if "tpm" in text else None,
        created_at=float(text.get("created_at", 0.0)),
        revoked_at=float(text["revoked_at"]) if "revoked_at" in text else None)
