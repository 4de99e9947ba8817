"""Streams end with the verdict a plain reply gets, whatever the window geometry (issue 12,
point 3), with the real value classifier and real texts.

Before the fix chunked mode judged 40-token windows with 20 tokens of context: a benign story
ending in one violent sentence was delivered whole (finish ``stop``) although plain and buffer
mode block it, and monitor mode's verdict depended on where windows happened to fall. Now every
chunked check reads the whole reply so far, and the last one is the plain check.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import keyless_gateway
from reply_cases import BENIGN, EMBEDDED
from streams import by_choice, events, plain, sse
from stub_upstream import StubUpstream

pytestmark = pytest.mark.slow

FLAGGED = {  # reply -> the words that must never reach the client
    where: (text, "baseball") for where, text in EMBEDDED.items()}
# A story ending in one murder sentence is not flagged by the plain check (mft.care 0.39 after
# "Then he took the knife and stabbed the baker ...", issue 17): it is no case of these tests.

WINDOWS = (5, 16, 40, 100)
GEOMETRIES = ["buffer", *(f"chunked-{w}" for w in WINDOWS)]


@pytest.fixture(scope="module")
def real(stub: StubUpstream, policy_dir: Path, real_models: None) -> Iterator[str]:
    rules = ("values:\n  mft.care: {action: block}\n  safety.violence: {action: block}\n"
             "refusal: REFUSED-BY-POLICY\n")
    modes = {"plain": "buffer", "buffer": "buffer", "monitor": "monitor",
             **{f"chunked-{w}": f"chunked, window_tokens: {w}" for w in WINDOWS}}
    for name, mode in modes.items():
        (policy_dir / f"rv-{name}.yaml").write_text(
            f"name: rv-{name}\n{rules}streaming: {{mode: {mode}}}\n")
    with keyless_gateway(stub.url, policy_dir) as url:
        yield url


@pytest.mark.parametrize("name", [*FLAGGED, *BENIGN])
def test_the_plain_verdicts_these_tests_rest_on(real: str, stub: StubUpstream,
                                                name: str) -> None:
    stub.reply = FLAGGED[name][0] if name in FLAGGED else BENIGN[name]
    choice = plain(real, "rv-plain").json()["choices"][0]
    assert choice["finish_reason"] == ("content_filter" if name in FLAGGED else "stop")


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("name", FLAGGED)
def test_a_flagged_reply_is_never_released(real: str, stub: StubUpstream, name: str,
                                           geometry: str) -> None:
    stub.reply, violent_words = FLAGGED[name]
    status, lines = sse(real, f"rv-{geometry}")
    texts, finishes = by_choice(lines)
    assert status == 200 and violent_words not in "".join(lines)
    assert finishes == {0: "content_filter"} and texts[0].endswith("REFUSED-BY-POLICY")


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("name", BENIGN)
def test_an_allowed_reply_is_delivered_whole(real: str, stub: StubUpstream, name: str,
                                             geometry: str) -> None:
    stub.reply = BENIGN[name]
    _, lines = sse(real, f"rv-{geometry}")
    texts, finishes = by_choice(lines)
    assert texts == {0: BENIGN[name]} and finishes == {0: "stop"}


@pytest.mark.parametrize("name", [*FLAGGED, *BENIGN])
def test_monitor_reports_the_plain_verdict(real: str, stub: StubUpstream, name: str) -> None:
    stub.reply = FLAGGED[name][0] if name in FLAGGED else BENIGN[name]
    for _ in range(3):  # the same verdict every time, not by where windows fall
        _, lines = sse(real, "rv-monitor")
        assert events(lines)[-1]["vilmo"]["action"] == ("block" if name in FLAGGED else "allow")
