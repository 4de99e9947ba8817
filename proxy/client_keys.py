"""Virtual client keys on the request path: finding the key, its rpm/tpm budgets, the charge.

Tokens are held, not only checked: once a chat request is read, ``reserve_tokens`` counts its
estimated tokens (``token_need``) in the key's window, in the same atomic step as the check, so
concurrent requests cannot all pass a check made before any of them was charged, and one
request cannot be larger than the key's ``tpm`` (the estimate, ``proxy.token_estimate``, is
one the way a text is written cannot make cheap). A regeneration is sent only when it fits in
what the request holds, or what it lacks is held then (``hold_to_regenerate``): the ``tpm`` is
a ceiling across them. ``Settlement`` settles it, once, just before its client has the whole
reply: the tokens it used (``proxy.stages.Trace.tokens``) in, what it held out.

A ``/v1/values/check`` request is charged its text's estimate the same way
(``proxy.check_charge``), given back only when it is refused before the judge reads it.

A key is read from the store on every request, so a revocation holds on every replica at once
while the store is reachable. When the store cannot be reached, a key this process verified
within ``VERIFIED_TTL_S`` is still served (the gateway keeps serving through a Redis outage, its
limits degrading by ``store.limits_on_error``); a key this process saw verified and then revoked
is refused (401); any other virtual key is refused as not checked (503 ``store_unavailable``
with ``Retry-After``: the client retries, as it would not after a 401), never let through
unverified. A key revoked through this replica is marked revoked here at once; another replica
that checked the key before the revocation (any check after it marks the key) may serve it
during an outage until ``VERIFIED_TTL_S`` after that check, so at most ``VERIFIED_TTL_S`` after
the revocation.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from proxy.errors import KeyRateLimited, StoreDown
from proxy.protocol import UpstreamParams
from proxy.stages import Trace, current_trace
from proxy.store import LimitDecision, Store, StoreError, StoreUnavailable, VirtualKey
from proxy.token_estimate import estimated_tokens, least_bound, prompt_estimate

log = logging.getLogger(__name__)

LIMITED_PATHS = frozenset({"/v1/chat/completions", "/v1/values/check"})
VERIFIED_TTL_S = 300.0
VERIFIED_MAX = 10_000
REPLY_FIELDS = ("max_tokens", "max_completion_tokens")
"""The fields that cap a reply's tokens per choice (OpenAI's older and newer name)."""


class VerifiedKeys:
    """Keys this process verified recently (by a hash of the presented key), for outages only,
    and those of them it has seen revoked since. Only a key once verified is kept: forged keys
    do not grow it."""

    def __init__(self, ttl_s: float = VERIFIED_TTL_S, max_keys: int = VERIFIED_MAX) -> None:
        self.ttl_s = ttl_s
        self.max_keys = max_keys
        self._keys: OrderedDict[str, tuple[VirtualKey | None, float]] = OrderedDict()
        """Digest to (the key, when verified); (None, when) once revoked."""
        self._lock = threading.Lock()

    def remember(self, presented: str, key: VirtualKey | None) -> None:
        digest = _digest(presented)
        with self._lock:
            if key is None:  # unknown or revoked: never served from here again
                if digest in self._keys:
                    self._keys[digest] = (None, time.monotonic())
                return
            self._keys[digest] = (key, time.monotonic())
            self._keys.move_to_end(digest)
            while len(self._keys) > self.max_keys:
                self._keys.popitem(last=False)

    def forget(self, key_id: str) -> None:
        """A key revoked through this replica: never served from here again, outage or not."""
        with self._lock:
            for digest, (key, _) in list(self._keys.items()):
                if key is not None and key.id == key_id:
                    self._keys[digest] = (None, time.monotonic())

    def recall(self, presented: str) -> VirtualKey | None:
        """The key, verified within ``ttl_s``; else None."""
        with self._lock:
            found = self._keys.get(_digest(presented))
        if found is None or found[0] is None or time.monotonic() - found[1] > self.ttl_s:
            return None
        return found[0]

    def revoked(self, presented: str) -> bool:
        """Whether this key was verified here and found revoked since (a revocation is for
        good: no time limit)."""
        with self._lock:
            found = self._keys.get(_digest(presented))
        return found is not None and found[0] is None


async def find_virtual_key(store: Store, presented: str,
                           verified: VerifiedKeys | None = None) -> VirtualKey | None:
    """The active key, from the store; None when it is unknown or revoked. During an outage: a
    key verified recently, None for one known revoked, else StoreDown (503 with Retry-After:
    the key could not be checked)."""
    try:
        found = await asyncio.to_thread(store.find_key, presented)
    except StoreError as error:
        if verified is not None:
            recalled = verified.recall(presented)
            if recalled is not None or verified.revoked(presented):
                return recalled
        log.warning("virtual key not checked (store unreachable), refused: %s", error)
        raise key_not_checked(store, error) from None
    if verified is not None:
        verified.remember(presented, found)
    return found


def key_not_checked(store: Store, error: StoreError) -> StoreDown:
    """The 503 for a virtual key the store could not check; retry once the store is tried
    again (``store.retry_s``). The store's own error text stays in the log."""
    retry = max(1, math.ceil(store.settings.retry_s))
    unreachable = isinstance(error, StoreUnavailable)
    why = "the store is unreachable" if unreachable else "a store error"
    return StoreDown(f"this key cannot be checked now ({why}); retry in {retry} s",
                     code="store_unavailable" if unreachable else "store_error",
                     headers={"retry-after": str(retry)})


async def admit(store: Store, key: VirtualKey) -> KeyRateLimited | None:
    """None when the key's budgets have room; else the 429 to answer."""
    decision = await asyncio.to_thread(store.admit, key.id, key.rpm, key.tpm)
    return None if decision.allowed else refusal(decision)


def refusal(decision: LimitDecision) -> KeyRateLimited:
    """The 429 for a refused ``LimitDecision``, with its ``Retry-After``."""
    retry = max(1, decision.retry_after_s)
    reason = decision.reason or ("store" if decision.degraded else "rpm")
    what = {"rpm": "requests", "tpm": "tokens"}.get(reason, "requests")
    message = (f"this key's limits cannot be checked now (the store is unreachable); retry in "
               f"{retry} s" if reason == "store"
               else f"this key is over its {what} per minute limit; retry in {retry} s")
    return KeyRateLimited(message, code=reason, headers={"retry-after": str(retry)})


UNCAPPED_SHARE = 4
"""A request without a reply cap holds replies of at most ``tpm // UNCAPPED_SHARE`` tokens (and
its messages): what it holds, it holds until it is settled, so with the whole window (as
before) one such request made every concurrent one on its key a 429; with a quarter, at least
about four run at once. Its replies are capped at what it holds (``cap_replies``); a client
that wants longer ones sets ``max_tokens`` (held in full, up to the key's ``tpm``)."""


@dataclass(frozen=True, slots=True)
class TokenNeed:
    """What a chat request may cost: its messages (``proxy.stages.estimated_tokens``) and
    its replies (``choices`` of ``max_tokens``, or of the bounded default ``token_need`` sets)."""

    prompt: int
    least: int
    """Admitted only with room for this much: the messages and, with ``max_tokens`` set,
    every reply in full; without it, one reply token per choice."""
    most: int
    """Held when the window has room: the messages and every reply in full."""
    reply_cap: int | None
    """``max_tokens`` (or ``max_completion_tokens``) per choice, when the request sets it."""
    choices: int = 1


def token_need(params: Mapping[str, Any], reply_ceiling: int,
               tpm: int | None = None, prompt: int | None = None) -> TokenNeed:
    """``reply_ceiling``: the most reply tokens per choice held for a request that sets no
    cap (``server.tpm_default_max_tokens``, at most ``server.max_tokens``); with the key's
    ``tpm``, also at most its ``UNCAPPED_SHARE`` across the choices (never below one token a
    choice), so that one request leaves room for concurrent ones. ``prompt``: the messages'
    estimate when it is known (``proxy.token_estimate``)."""
    if prompt is None:
        prompt = estimated_tokens(params)
    n = params.get("n")
    choices = n if type(n) is int and n > 0 else 1
    caps = [v for v in (params.get(field) for field in REPLY_FIELDS)
            if type(v) is int and v > 0]
    if caps:
        full = prompt + choices * max(caps)
        return TokenNeed(prompt, full, full, max(caps), choices)
    per_choice = max(1, reply_ceiling)
    if tpm is not None:
        per_choice = min(per_choice, max(1, tpm // UNCAPPED_SHARE // choices))
    return TokenNeed(prompt, prompt + choices, prompt + choices * per_choice, None, choices)


@dataclass(slots=True)
class Held:
    """What a request holds in its key's window, for its regenerations
    (``hold_to_regenerate``): each may be sent only when what the request used so far and
    what the next call may cost fit in it."""

    store: Store
    key: VirtualKey
    choices: int
    cap: int
    """The reply cap per choice every call of the request is sent with (``cap_replies``)."""
    tokens: int
    """Held so far: the reservation, and what was held since (``Trace.more_held``); the key's
    whole ``tpm`` when the store was unreachable and ``limits_on_error: fail_open`` admitted."""
    degraded: bool = False


current_hold: ContextVar[Held | None] = ContextVar("vilmo_held", default=None)


async def reserve_tokens(store: Store, key: VirtualKey, params: UpstreamParams,
                         reply_ceiling: int) -> KeyRateLimited | None:
    """Hold the request's tokens in the key's window (kept in the request's trace, for
    ``charge`` to settle) and cap its replies to what is held (``cap_replies``); None when
    they fit, else the 429 to answer. A request that needs more than the key's ``tpm`` could
    never fit: refused without ``Retry-After``, from a bound of its estimate that costs
    nothing to count when that is enough (``least_bound``, whose reading of the request the
    full estimate reuses); a large request is estimated in a worker thread."""
    if key.tpm is None:
        return None
    bound = least_bound(params)
    need = token_need(params, reply_ceiling, key.tpm, bound.tokens)
    if need.least <= key.tpm:
        need = token_need(params, reply_ceiling, key.tpm, await bound.estimate())
    if need.least > key.tpm:
        asked = (f" and max_tokens {need.reply_cap} per choice" if need.reply_cap is not None
                 else "")
        return KeyRateLimited(
            f"this request needs about {need.least} tokens (its input about {need.prompt}"
            f"{asked}), more than this key's limit of {key.tpm} tokens per minute: it can never "
            "be admitted; shorten the input or lower max_tokens", code="tpm")
    decision = await asyncio.to_thread(store.reserve_tokens, key.id, key.tpm, need.least,
                                       need.most)
    if not decision.allowed:
        return refusal(decision)
    trace = current_trace.get()
    if trace is not None:
        trace.reserved, trace.reserved_at = decision.reserved, decision.reserved_at
    held = key.tpm if decision.degraded else decision.reserved  # unreachable: the most ever
    cap = max(1, (held - need.prompt) // need.choices)
    cap_replies(params, cap)
    sent = [v for v in (params.get(field) for field in REPLY_FIELDS) if type(v) is int]
    current_hold.set(Held(store, key, need.choices, min([cap, *sent]) if sent else cap, held,
                          decision.degraded))
    return None


async def hold_to_regenerate(params: UpstreamParams) -> bool:
    """Whether the request may call its upstream again with ``params`` (a regeneration):
    what it used so far (``Trace.tokens``) and what the call may cost (its messages and its
    replies at their cap) must fit in what it holds, else the difference is held now in the
    key's window (never past the key's ``tpm``). False when it cannot be: the reply is then
    blocked, as at the policy's regeneration limit, rather than spend past the key's limit
    (one reservation paid for up to 1 + ``max_regenerations`` calls). A request on a key
    without ``tpm`` may always."""
    held, trace = current_hold.get(), current_trace.get()
    if held is None or trace is None or held.key.tpm is None:
        return True
    prompt = await prompt_estimate(params, held.key.tpm)
    short = trace.tokens + prompt + held.choices * held.cap - held.tokens
    if short <= 0:
        return True
    if held.degraded:  # the whole tpm was held: no more
        return False
    decision = await asyncio.to_thread(held.store.reserve_tokens, held.key.id, held.key.tpm,
                                       short, short)
    if not decision.allowed or decision.degraded:
        log.info("key %s: no room in its tpm for a regeneration; the reply is blocked",
                 held.key.id)
        return False
    trace.more_held.append((decision.reserved, decision.reserved_at))
    held.tokens += decision.reserved
    return True


def cap_replies(params: UpstreamParams, cap: int) -> None:
    """Make the key's ``tpm`` a ceiling: the upstream may generate only what was held for
    the request, ``cap`` tokens per choice. A reply cap larger than that is lowered to it;
    a request with none gets ``max_completion_tokens`` (the field every OpenAI model takes,
    and LiteLLM maps for other providers)."""
    present = [field for field in REPLY_FIELDS if params.get(field) is not None]
    for field in present:
        if type(params[field]) is int and params[field] > cap:
            params[field] = cap
    if not present:
        params["max_completion_tokens"] = cap


class Settlement:
    """Settles a request with its key's window once: the tokens it used (``trace.tokens``) in,
    what was held for it (the reservation, and any held for a regeneration) out, in one step.

    ``before_last`` settles just before the client has the last of the reply, so the client's
    next request is checked against what this one used: settled only after the reply was out
    (as it was), a client that sent its next request at once was refused for what this one
    still held, told to retry in up to a minute. ``after`` (however the request ended) settles
    one that never got that far (left by its client, failed), off the event loop, not awaited;
    or charges what was counted after the settle, if anything was. Both wait first for the
    estimates still being counted off the loop (``Trace.counting``: a call that ended without
    usage, perhaps by its client leaving)."""

    def __init__(self, store: Store, key: VirtualKey, trace: Trace) -> None:
        self.store, self.key, self.trace = store, key, trace
        self.charged: int | None = None
        """``trace.tokens`` when settled; None until then."""

    def _due(self, tokens: int, holds: list[tuple[int, int]]) -> bool:
        return any(held > 0 for held, _ in holds) or (tokens > 0 and self.key.tpm is not None)

    def _holds(self) -> list[tuple[int, int]]:
        return [(self.trace.reserved, self.trace.reserved_at), *self.trace.more_held]

    def _settle(self, tokens: int, holds: list[tuple[int, int]]) -> None:
        first, *more = holds or [(0, 0)]
        self.store.charge_tokens(self.key.id, tokens, *first)
        for held, at in more:
            self.store.charge_tokens(self.key.id, 0, held, at)

    async def before_last(self) -> None:
        if self.charged is not None:
            return
        if self.trace.counting:  # cancelled here: nothing is settled yet, ``after`` does it
            await asyncio.wait(list(self.trace.counting))
        tokens = self.charged = self.trace.tokens  # first: a cancelled await is still settled
        holds = self._holds()
        if not self._due(tokens, holds):
            return
        try:
            await asyncio.to_thread(self._settle, tokens, holds)
        except Exception:  # a bug's error (unreachable is handled by the store): keep serving
            log.exception("settling key %s failed", self.key.id)

    def after(self) -> None:
        if self.trace.counting:  # settled once they are counted (``proxy.stages._counted``)
            asyncio.gather(*self.trace.counting, return_exceptions=True).add_done_callback(
                lambda _: self.after())
            return
        settled = self.charged is not None
        tokens = self.trace.tokens - (self.charged or 0)
        holds = [] if settled else self._holds()
        if self._due(tokens, holds):
            asyncio.get_running_loop().run_in_executor(None, self._settle, tokens, holds)


def _digest(presented: str) -> str:
    return hashlib.sha256(presented.encode()).hexdigest()
