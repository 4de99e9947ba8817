"""Pure-ASGI guards in front of the routes: the client's API key, the body size limit, and
the last resort for unexpected errors.

Keys are compared with ``hmac.compare_digest``. The caller found for a key is put in
``scope["state"]["caller"]`` for the routes. A chat request refused here (401, 413, 429, 503
for a key the store could not check, 500) still leaves an audit record, named to the client by
``x-request-id`` as the routes' answers are; a keyless or rate-limited refusal that
``proxy.refusals`` leaves out of the trail has no record and so no ``x-request-id``.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.caches import writes_after
from proxy.client_keys import (
    LIMITED_PATHS,
    Settlement,
    VerifiedKeys,
    admit,
    find_virtual_key,
)
from proxy.errors import AuthenticationFailed, GatewayError, MetricsForbidden, PayloadTooLarge
from proxy.key_config import ANY_POLICY, KeyBinding
from proxy.outcome import Facts, verdict_of
from proxy.record import Ledger
from proxy.refusals import LimitSampler, RefusalSampler
from proxy.settings import AuthSettings
from proxy.stages import current_trace, start_trace
from proxy.store import Store, VirtualKey, looks_like_virtual_key

log = logging.getLogger(__name__)

CHAT_PATH = "/v1/chat/completions"
METRICS_PATH = "/metrics"
"""It names every tenant's key and its usage: the metrics key and the admin key open it, client
keys do not (``KeyAuth``)."""


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the tenant, its bound policy, and which others it may pick."""

    name: str
    policy: str | None
    allow_policy_header: bool
    key: VirtualKey | None = None
    """The virtual key from the store (its id, profile and limits); None for config keys."""
    choices: frozenset[str] = frozenset()
    """What ``X-Vilmo-Policy`` may name besides the bound policy (``ANY_POLICY``: any loaded
    one); only with ``allow_policy_header`` (``proxy.key_config``)."""

    def may_choose(self, name: str, default_policy: str) -> bool:
        """Whether the header may name ``name``: the bound policy (the default when the key
        binds none), or one of ``choices``."""
        if not self.allow_policy_header:
            return False
        return (name == (self.policy or default_policy) or ANY_POLICY in self.choices
                or name in self.choices)

    def choosable(self, names: Sequence[str], default_policy: str) -> list[str]:
        """Those of ``names`` the header may name (the policies an error may list to it)."""
        return [name for name in names if self.may_choose(name, default_policy)]

    @property
    def sees_config(self) -> bool:
        """May error texts list the gateway's models and policies to this caller?"""
        return self.allow_policy_header


async def send_error(send: Send, error: GatewayError,
                     headers: Mapping[str, str] | None = None) -> None:
    """Answer with an OpenAI error envelope, outside any framework; ``headers`` go with the
    error's own (``x-request-id``)."""
    body = json.dumps(error.envelope()).encode()
    extra = {**error.headers, **(headers or {})}
    sent = [(b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *((k.encode("latin-1"), v.encode("latin-1")) for k, v in extra.items())]
    await send({"type": "http.response.start", "status": error.status, "headers": sent})
    await send({"type": "http.response.body", "body": body})


def request_id_header(request_id: str | None) -> dict[str, str]:
    """``x-request-id`` naming the audit record, when the request has one."""
    return {"x-request-id": request_id} if request_id is not None else {}


def record_refusal(scope: Scope, caller: str, error: GatewayError,
                   suppressed: int | None = 0) -> str | None:
    """An audit record (and metrics) for a chat request refused before its route; its ledger
    goes in the request's state, so a later failure does not record the request twice.
    ``suppressed``: a sampler's decision (``Ledger.sample``; None: metrics only). Returns the
    record's id (None for other paths, which are not recorded, and when not audited)."""
    if scope["path"] != CHAT_PATH:
        return None
    known: Caller | None = scope.get("state", {}).get("caller")
    key_id = known.key.id if known is not None and known.key is not None else None
    ledger = scope.setdefault("state", {})["ledger"] = Ledger(caller, key_id=key_id)
    ledger.sample(suppressed)
    scope["app"].state.services.finish(ledger, str(error.status), error.code)
    return ledger.request_id if ledger.audited else None


def key_refusal_sample(scope: Scope, error: GatewayError,
                       facts: Facts | None = None) -> int | None:
    """For a virtual key's chat request refused (4xx, not the limits' 429s, which have their
    own sample) before any upstream call and without a value verdict (a body that is no valid
    request, 413, 415, an unknown model or policy, 499): the decision of the sampler its 429s
    have (``Services.limit_refusals``, the first of each key and status a minute; None:
    metrics only). No limit counts such a request (``tpm`` refunds it whole), so a key limited
    by ``tpm`` alone sent 300 malformed requests and left 300 records, pushing every other
    tenant's out of the trail. 0 (audited) for any other request."""
    caller: Caller | None = scope.get("state", {}).get("caller")
    trace = current_trace.get()
    if (scope["path"] != CHAT_PATH or caller is None or caller.key is None
            or not 400 <= error.status < 500 or error.status == 429
            or (trace is not None and (trace.upstream or trace.tokens or trace.counting))
            or (facts is not None and (verdict_of(facts.input) or verdict_of(facts.reply)))):
        return 0
    sampler: LimitSampler = scope["app"].state.services.limit_refusals
    return sampler.audits(f"{caller.key.id}/{error.status}")


def count_refusal(scope: Scope, caller: str, error: GatewayError) -> None:
    """Metrics only, no audit record, for a chat request refused before its route."""
    if scope["path"] == CHAT_PATH:
        ledger = scope.setdefault("state", {})["ledger"] = Ledger(caller)
        record = ledger.close(str(error.status), error.code)
        if record is not None:
            scope["app"].state.services.metrics.record(record, current_trace.get())


class KeyAuth:
    """Resolves ``Authorization: Bearer KEY`` to a Caller: a config key, or a virtual key
    (``vk-<id>-<secret>``) read from the store on every request, so a revoked key is refused on
    every replica at once (during a store outage: ``proxy.client_keys``; a key that could not be
    checked is a 503 with ``Retry-After``). 401 when keys are required and it is missing or
    unknown, on every path but ``auth.public_paths`` (served without a caller); a presented
    virtual key that is unknown or revoked is a 401 always. Keys are required when config keys
    are set or an admin key is (a gateway with an admin API issues keys: it is no open proxy);
    otherwise every caller without a key is anonymous. The admin API and the dashboard check the
    admin key themselves (``proxy.admin``). ``/metrics`` wants the metrics key or the admin key
    (403 to a client key) once keys are required or a metrics key is set; with no key configured
    at all it is open. A virtual key's rpm/tpm limits are admitted here (429 with
    ``Retry-After``), and the reply's tokens charged when the request is done. A chat request
    refused for want of a valid key, or by its key's limits, is counted in the metrics always
    and audited as ``proxy.refusals`` bounds it (the first from each client address, or of
    each key, each minute)."""

    def __init__(self, app: ASGIApp, settings: AuthSettings,
                 verified: VerifiedKeys | None = None) -> None:
        self.app = app
        self.bindings: Sequence[KeyBinding] = settings.keys
        self.public_paths = frozenset(settings.public_paths)
        self.required = settings.keys_required
        self.anonymous = Caller("anonymous", None, settings.allow_policy_header,
                                choices=frozenset([ANY_POLICY]))  # no keys: local use
        for binding in self.bindings:
            if binding.allow_policy_header and not binding.policies:
                log.warning("key %r has allow_policy_header but no `policies`: X-Vilmo-Policy "
                            "may name only its bound policy (list the others it may choose, or "
                            "[\"*\"] for any)", binding.name)
        self.metrics_keys = [k for k in (settings.admin_key, settings.metrics_key) if k]
        self.metrics_guarded = self.required or settings.metrics_key is not None
        self.verified = verified or VerifiedKeys()
        """Keys verified recently, for outages; shared with the admin API, which forgets a key
        it revokes."""
        self.refusals = RefusalSampler()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        trace = start_trace()
        path = scope["path"]
        if is_admin_path(path):
            await self.app(scope, receive, send)
            return
        presented = _bearer(scope)
        store: Store | None = getattr(scope["app"].state, "store", None)
        if path == METRICS_PATH and self.metrics_guarded and path not in self.public_paths:
            await self._metrics(scope, receive, send, presented, store)
            return
        try:
            caller = await resolve_caller(presented, self.bindings, store, self.verified)
        except GatewayError as unchecked:  # the store could not check the key
            if path in self.public_paths:
                caller = None
            else:
                recorded = self._record_unauthenticated(scope, unchecked)
                await send_error(send, unchecked, request_id_header(recorded))
                return
        if caller is None and not self.required and not (
                presented and looks_like_virtual_key(presented)):
            caller = self.anonymous
        if caller is not None:
            scope.setdefault("state", {})["caller"] = caller
        elif path not in self.public_paths:
            refused = AuthenticationFailed(
                "missing or invalid API key: send 'Authorization: Bearer <key>'",
                code="invalid_api_key")
            recorded = self._record_unauthenticated(scope, refused)
            await send_error(send, refused, request_id_header(recorded))
            return
        key = caller.key if caller is not None else None
        if key is not None and store is not None and path in LIMITED_PATHS:
            refused_by_limit = await admit(store, key)
            if refused_by_limit is not None:
                sampled = scope["app"].state.services.limit_refused(
                    key, refused_by_limit, "rpm",
                    audited=path == CHAT_PATH)  # only chat requests are recorded
                recorded = record_refusal(scope, key.name, refused_by_limit, sampled)
                await send_error(send, refused_by_limit, request_id_header(recorded))
                return
        if key is None or store is None:
            await self.app(scope, receive, send)
            return
        settle = Settlement(store, key, trace)  # what the route reserves

        async def settling_send(message: Message) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body"):
                await settle.before_last()
            await send(message)

        try:
            await self.app(scope, receive, settling_send)
        finally:
            settle.after()

    def _record_unauthenticated(self, scope: Scope, error: GatewayError) -> str | None:
        """The audit record's id; None when the refusal is counted only (or not a chat)."""
        if scope["path"] != CHAT_PATH:  # only chat requests are recorded
            return None
        client = scope.get("client")
        if self.refusals.audits(client[0] if client else "unknown"):
            return record_refusal(scope, "unauthenticated", error)
        count_refusal(scope, "unauthenticated", error)
        return None

    async def _metrics(self, scope: Scope, receive: Receive, send: Send,
                       presented: str | None, store: Store | None) -> None:
        """``/metrics``: served to the metrics key or the admin key, with no caller; a client
        key is a 403 (it would read every other tenant's key names and usage), anything else
        a 401."""
        if presented and _matches_any(presented, self.metrics_keys):
            await self.app(scope, receive, send)
            return
        try:
            caller = await resolve_caller(presented, self.bindings, store, self.verified)
        except GatewayError as unchecked:
            await send_error(send, unchecked)
            return
        if caller is not None:
            await send_error(send, MetricsForbidden(
                "this is a client key; /metrics needs the metrics key (auth.metrics_key) or "
                "the admin key", code="metrics_key_required"))
            return
        await send_error(send, AuthenticationFailed(
            "missing or invalid metrics key: send 'Authorization: Bearer <metrics key>'",
            code="invalid_api_key"))


def _matches_any(presented: str, keys: Sequence[str]) -> bool:
    """Compared with every key (timing does not depend on which matches)."""
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(presented.encode(), key.encode())
    return matched


def static_caller(bindings: Sequence[KeyBinding], key: str | None) -> Caller | None:
    """The config key's caller (every key compared: timing does not depend on which)."""
    if not key:
        return None
    match = None
    for binding in bindings:
        if hmac.compare_digest(binding.key.encode(), key.encode()):
            match = binding
    if match is None:
        return None
    return Caller(match.name, match.policy, match.allow_policy_header, choices=match.choices())


async def resolve_caller(key: str | None, bindings: Sequence[KeyBinding],
                         store: Store | None, verified: VerifiedKeys | None = None,
                         ) -> Caller | None:
    """A config key, else an active virtual key from the store; None when neither."""
    caller = static_caller(bindings, key)
    if caller is not None or not key or store is None or not looks_like_virtual_key(key):
        return caller
    found = await find_virtual_key(store, key, verified)
    return None if found is None else Caller(found.name, found.policy, False, found)


def is_admin_path(path: str) -> bool:
    return path.startswith("/admin/") or path in ("/admin", "/dashboard")


def _bearer(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


class BodyLimit:
    """413 for request bodies over ``max_bytes``, by Content-Length or as they stream in."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = PayloadTooLarge(f"request body is larger than {self.max_bytes} bytes",
                                    code="payload_too_large")
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                caller: Caller | None = scope.get("state", {}).get("caller")
                recorded = record_refusal(scope, caller.name if caller else "anonymous",
                                          too_large, key_refusal_sample(scope, too_large))
                await send_error(send, too_large, request_id_header(recorded))
                return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise too_large
            return message

        await self.app(scope, limited_receive, send)


class UnexpectedErrors:
    """The last resort: an exception nothing mapped becomes a 500 envelope, an audit record and
    one log line (Starlette's own handler would re-raise it to the server, which logs the whole
    traceback; the traceback is kept at debug level); a chat request that failed before its route
    made a ledger (in ``KeyAuth``) is recorded too. It also spans the request's life: the
    requests in flight (``Guard.requests_in_flight``) and its cache writes, held until the
    response's last byte (``proxy.caches.writes_after``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        services = getattr(scope["app"].state, "services", None) if "app" in scope else None
        guard = getattr(services, "guard", None)
        if guard is not None:  # requests in flight, until the response's last byte
            guard.requests_in_flight += 1
        try:
            with writes_after():  # the request's cache writes, once its response is sent
                await self.app(scope, receive, tracked_send)
        except Exception as exc:
            log.error("unexpected error on %s %s: %s: %.200s", scope["method"], scope["path"],
                      type(exc).__name__, exc)  # redacted whole, then cut (the log factory)
            log.debug("traceback of the unexpected error", exc_info=exc)
            error = GatewayError("internal error in the gateway", code="internal_error")
            state = scope.get("state", {})
            ledger: Ledger | None = state.get("ledger")
            recorded: str | None = None
            if ledger is not None:  # recorded once: a no-op if a handler recorded it
                scope["app"].state.services.finish(ledger, str(error.status), error.code)
                recorded = ledger.request_id if ledger.audited else None
            elif services is not None:  # a chat request that failed before its route (KeyAuth)
                caller: Caller | None = state.get("caller")
                recorded = record_refusal(scope, caller.name if caller else "unidentified", error)
            if not started:
                await send_error(send, error, request_id_header(recorded))
        finally:
            if guard is not None:
                guard.requests_in_flight -= 1
