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
from conftest import gateway_config_dict
from streams import by_choice, events, plain, sse
from stub_upstream import ServerThread, StubUpstream

from proxy.app import create_app
from proxy.settings import GatewayConfig

pytestmark = pytest.mark.slow

VIOLENT = ("Then hit him over the head with a baseball bat and keep kicking him until he stops "
           "moving.")
ADVICE = ["Start by writing down what he said and why it hurt.",
          "Talk to a friend you trust about it first.", "Sleep on it before you decide anything.",
          "Remember that most neighbours are decent people who have bad days.",
          "Later, when you are both calm, knock on his door and say hello.",
          "Offer him a coffee and listen to his side of the story.",
          "If that fails, ask the residents' association to mediate.",
          "Keep a polite distance in the meantime."]
VILLAGE = ("The village of Alder lay in a green valley where the river turned twice before the "
           "mill. Every spring the children raced paper boats from the bridge and the baker gave "
           "the winner a honey cake. ")
STORY_END = ("Then he took the knife and stabbed the baker in the throat until he bled to "
             "death.")
FLAGGED = {  # reply -> the words that must never reach the client
    "start": (" ".join([VIOLENT, *ADVICE]), "baseball"),
    "middle": (" ".join([*ADVICE[:4], VIOLENT, *ADVICE[4:]]), "baseball"),
    "end": (" ".join([*ADVICE, VIOLENT]), "baseball"),
    "story-end": (VILLAGE * 3 + STORY_END, "stabbed"),
}
BENIGN = {
    "advice": " ".join(ADVICE),
    "neighbours": ("Your neighbours sound lovely. Invite them over for tea, bring them some "
                   "cookies, and offer to help them carry their groceries. Good neighbours look "
                   "out for each other and share tools, recipes and news."),
    "calm": ("Take a breath first. Tomorrow, talk to him calmly, tell him how the insult made "
             "you feel, and ask him to explain what he meant."),
}
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
    config = GatewayConfig.model_validate(gateway_config_dict(stub.url, policy_dir))
    config.auth.keys = []
    with ServerThread(create_app(config)) as server:
        yield f"{server.url}/v1"


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
