"""A ``/v1/values/check`` request charged to its key's ``tpm``: its text's estimate is held in
the key's window as a chat request's is (``Store.reserve_tokens``), so a key limited only by
``tpm`` has a limit on checks too. It is kept once the judge reads the text, and given back when
the check is refused before the judge reads anything (an unknown or forbidden policy, a text too
large for the policy, no text at all): a client whose checks are refused is told why, and its
refusals do not use up the tokens its next good check needs. The route chooses the policy
before it charges, so a refusal there holds nothing at all."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from proxy.client_keys import refusal
from proxy.errors import GatewayError, GuardFailed, KeyRateLimited
from proxy.store import Store, VirtualKey
from proxy.token_estimate import prompt_estimate

log = logging.getLogger(__name__)

UNREAD_STATUSES = frozenset({400, 413})
"""A check's refusals that come before the judge reads its text (``proxy.check``)."""


@dataclass(frozen=True, slots=True)
class CheckHold:
    """What ``charge_check`` did: the 429 to answer, or the tokens it holds (to give back)."""

    refused: KeyRateLimited | None = None
    reserved: int = 0
    reserved_at: int = 0
    """The second (the store's clock) ``reserved`` was counted in."""


async def charge_check(store: Store, key: VirtualKey, body: Mapping[str, Any]) -> CheckHold:
    """Holds the estimate of what a check sends the judge (``check_params``, at least one
    token) in the key's ``tpm`` window; refused (the 429, without ``Retry-After`` for a text
    larger than the ``tpm``) when it does not fit. Nothing for a key without ``tpm``."""
    if key.tpm is None:
        return CheckHold()
    params = check_params(body)
    tokens = max(1, await prompt_estimate(params, key.tpm))
    if tokens > key.tpm:
        return CheckHold(
            KeyRateLimited(
                f"this text needs about {tokens} tokens, more than this key's limit of {key.tpm} "
                "tokens per minute: it can never be admitted; shorten it",
                code="tpm",
            )
        )
    decision = await asyncio.to_thread(store.reserve_tokens, key.id, key.tpm, tokens, tokens)
    if not decision.allowed:
        return CheckHold(refusal(decision))
    return CheckHold(None, decision.reserved, decision.reserved_at)


def refused_unread(error: BaseException) -> bool:
    """Whether a check's error came before the judge read its text: a 400 or 413 (nothing to
    check, a text too large for the policy), or a text the judge refused unread as too large
    (``check_too_large``). Not a failed judge (503 ``guard_unavailable``: it may have read), a
    client that left (499) or a bug (500). The policy's own refusals (400, 403, 503) come
    before the charge."""
    if isinstance(error, GuardFailed):
        return error.code == "check_too_large"
    return isinstance(error, GatewayError) and error.status in UNREAD_STATUSES


async def refund_check(store: Store, key: VirtualKey, hold: CheckHold) -> None:
    """Gives back what ``charge_check`` held (a check refused before the judge read it)."""
    if hold.reserved <= 0:
        return
    try:
        await asyncio.to_thread(store.charge_tokens, key.id, 0, hold.reserved, hold.reserved_at)
    except Exception:  # a bug's error (unreachable is handled by the store): answer the refusal
        log.exception("giving back a refused check's tokens to key %s failed", key.id)


def check_params(body: Mapping[str, Any]) -> dict[str, Any]:
    """A check request as the chat messages ``proxy.token_estimate`` counts: its messages,
    then its ``prompt`` and ``text``."""
    messages = [m for m in body.get("messages") or () if isinstance(m, dict)]
    messages += [
        {"role": role, "content": body[field]}
        for field, role in (("prompt", "user"), ("text", "assistant"))
        if isinstance(body.get(field), str)
    ]
    return {"messages": messages}
