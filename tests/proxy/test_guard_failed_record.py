"""A request that ended because a reply's check failed closed (503 ``guard_unavailable``) is
recorded with guard ``error``: the review's regen_guard.py found ``off`` when the first
reply's check failed and ``ok`` when a regeneration's did, as if the replies were checked."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from fakes import CRASH, VIOLENT, FakeUpstream, MemoryAudit, fake_services, post_chat

from vilmo.instruct.principles import PrincipleBank


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("first", "regenerated"), [
    (f"{CRASH} first reply", None),  # the first reply's check fails closed
    (VIOLENT, f"{CRASH} regenerated reply"),  # the regeneration's check fails closed
])
def test_a_check_that_failed_closed_is_recorded_as_an_error(
        policy_dir: Path, bank: PrincipleBank, stream: bool, first: str,
        regenerated: str | None) -> None:
    upstream = FakeUpstream()
    upstream.reply, upstream.reply_when_warned = first, regenerated
    services = fake_services(policy_dir, bank, upstream)

    async def main() -> int:
        try:
            response = await post_chat(
                services, {"model": "stub", "stream": stream,
                           "messages": [{"role": "user", "content": "hi"}]},
                {"X-Vilmo-Policy": "g-regenerate-buffer"})
            return response.status_code
        finally:
            await services.guard.aclose()

    assert asyncio.run(main()) == 503
    audit = services.audit
    assert isinstance(audit, MemoryAudit)
    (record,) = audit.records
    assert record.error_code == "guard_unavailable"
    assert record.guard == "error"
