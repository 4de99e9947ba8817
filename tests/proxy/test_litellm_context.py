"""LiteLLM's resets of its internal context variables that find nothing left to restore never
reach a request (they surfaced as a 500 now and then under load)."""

from __future__ import annotations

from typing import Any

from litellm import _internal_context as internal

from proxy.upstream import forgive_lost_context_resets


class LostVariable:
    """A context variable no longer set where it is reset: CPython raises LookupError."""

    def reset(self, token: Any) -> None:
        raise LookupError(self)


def test_a_reset_with_nothing_left_to_restore_is_forgiven() -> None:
    forgive_lost_context_resets()
    forgive_lost_context_resets()  # once is enough: wrapping twice changes nothing
    internal._restore(LostVariable(), object())  # type: ignore[arg-type]


def test_the_service_target_is_still_set_and_restored() -> None:
    forgive_lost_context_resets()
    assert internal.current_service_target() is None
    with internal.service_target("router-cooldowns"):
        assert internal.current_service_target() == "router-cooldowns"
    assert internal.current_service_target() is None
