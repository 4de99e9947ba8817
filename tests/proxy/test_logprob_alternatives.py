"""``top_logprobs`` go out when nothing of the reply can be hidden, and only then.

Before the fix every ``top_logprobs`` was emptied on entry, whatever the policy: a client of a
policy whose reply check can never stop a reply (no output check, or only ``allow`` and
``annotate`` rules) lost the alternatives for nothing. A reply that a check can block or
regenerate still has them emptied: they are text the check never reads.
"""

from __future__ import annotations

from typing import Any

import openai
import pytest
from conftest import ADMIN_KEY
from streams import ASK
from stub_upstream import StubUpstream

from proxy.call import reply_may_stop
from proxy.logprobs import MAX_ALTERNATIVES, kept_logprobs
from vilmo.policy import Policy

pytestmark = pytest.mark.both_paths


def tokens(gateway: str, policy: str, stream: bool) -> list[Any]:
    client = openai.OpenAI(base_url=gateway, api_key=ADMIN_KEY, max_retries=0,
                           default_headers={"X-Vilmo-Policy": policy})
    if not stream:
        reply = client.chat.completions.create(model="stub", messages=ASK, logprobs=True,
                                               top_logprobs=2)
        assert reply.choices[0].logprobs is not None
        return list(reply.choices[0].logprobs.content or [])
    chunks = client.chat.completions.create(model="stub", messages=ASK, logprobs=True,
                                            top_logprobs=2, stream=True)
    return [t for chunk in chunks for c in chunk.choices if c.logprobs and c.logprobs.content
            for t in c.logprobs.content]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("policy", ["g-annotate-buffer", "g-allow-chunked",
                                    "g-annotate-monitor"])
def test_alternatives_go_out_when_no_check_can_stop_the_reply(
        gateway: str, stub: StubUpstream, policy: str, stream: bool) -> None:
    stub.logprobs = True
    found = tokens(gateway, policy, stream)
    assert found and all([a.token for a in t.top_logprobs] == [" stab"] for t in found)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("policy", ["g-block-buffer", "g-regenerate-chunked",
                                    "g-block-monitor"])
def test_alternatives_are_emptied_when_a_check_can_stop_the_reply(
        gateway: str, stub: StubUpstream, policy: str, stream: bool) -> None:
    stub.logprobs = True
    found = tokens(gateway, policy, stream)
    assert found and all(t.top_logprobs == [] for t in found)


def test_a_reply_may_stop_only_when_checked_with_a_stopping_rule() -> None:
    def policy(values: dict[str, Any], output: bool) -> Policy:
        return Policy.model_validate({"name": "p", "values": values,
                                      "checks": {"output": output}})
    assert reply_may_stop(policy({"mft.care": {"action": "block"}}, True))
    assert not reply_may_stop(policy({"mft.care": {"action": "block"}}, False))
    assert not reply_may_stop(policy({"mft.care": {"action": "annotate"}}, True))


def test_shown_alternatives_are_bounded() -> None:
    alternatives = [{"token": f"t{i}", "logprob": -1.0, "bytes": None, "text": "x"}
                    for i in range(MAX_ALTERNATIVES + 5)]
    logprobs = {"content": [{"token": "Hi", "logprob": -0.5, "bytes": None,
                             "top_logprobs": alternatives}]}
    kept: Any = kept_logprobs(logprobs, {"content": "Hi"}, alternatives=True)
    shown = kept["content"][0]["top_logprobs"]
    assert len(shown) == MAX_ALTERNATIVES and all(set(a) == {"token", "logprob", "bytes"}
                                                  for a in shown)
    hidden: Any = kept_logprobs(logprobs, {"content": "Hi"})
    assert hidden["content"][0]["top_logprobs"] == []
    # An alternative that is not a typed entry (``proxy.logprobs.well_typed``) drops them all.
    loose = {"content": [{**logprobs["content"][0],
                          "top_logprobs": [*alternatives[:3], "loose", {"logprob": 1}]}]}
    assert kept_logprobs(loose, {"content": "Hi"}, alternatives=True) is None
