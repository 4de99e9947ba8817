"""``least_estimate`` runs on the event loop (admission, regeneration, a charge): a large body
must not be serialised there (a 4 MB message with 300,000 undeclared keys held the loop
0.25-0.55 s). Past ``OFF_LOOP_CHARS`` it reads no more than that, stays a lower bound, and
reports the body as large, so the full estimate runs in a worker thread."""

from __future__ import annotations

import types
from typing import Any

import pytest

from proxy import token_estimate
from proxy.off_loop import OFF_LOOP_CHARS
from proxy.token_estimate import estimated_tokens, least_estimate


def _message(**fields: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi", **fields}]}


LARGE: dict[str, dict[str, Any]] = {
    "300k short keys": _message(x={f"k{i}": 0 for i in range(300_000)}),
    "a list of zeros": _message(x=[0] * 200_000),
    "empty lists": _message(x=[[]] * 100_000),
    "tools": {"model": "m", "messages": [{"role": "user", "content": "hi"}],
              "tools": [{"type": "function",
                         "function": {"name": "f", "parameters": {"x": [0] * 200_000}}}]},
    "a top-level field": {"model": "m", "messages": [{"role": "user", "content": "hi"}],
                          "metadata": [0] * 200_000},
    "a long content": {"model": "m", "messages": [{"role": "user", "content": "word " * 50_000}]},
}


def _refuse(*args: Any, **kwargs: Any) -> str:
    raise AssertionError("least_estimate serialised a large body on the event loop")


@pytest.mark.parametrize("body", LARGE.values(), ids=list(LARGE))
def test_a_large_body_is_bound_without_serialising_it(
        body: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as patched:
        patched.setattr(token_estimate, "json", types.SimpleNamespace(dumps=_refuse))
        least, chars = least_estimate(body)
    assert chars > OFF_LOOP_CHARS  # so the full estimate runs off the loop
    assert least <= estimated_tokens(body)


def test_a_long_content_is_still_refused_at_its_bound() -> None:
    """A key's ``tpm`` refuses a body of long text from the bound, as before."""
    assert least_estimate(LARGE["a long content"])[0] >= 250_000 // 4
