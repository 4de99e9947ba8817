"""Zero-shot judging of custom principles with the packaged sentence encoder."""

from __future__ import annotations

import pytest

from vilmo.classifier import ScoreInput, UnknownValue
from vilmo.zero_shot import PrincipleSpec, ZeroShotClassifier, load_calibration

pytestmark = pytest.mark.slow  # loads the packaged encoder (a real model)

PRINCIPLE = PrincipleSpec(
    "no-dosing", "Never tell people what dose of a medication to take.",
    violating=("Take 800 mg of ibuprofen every four hours for the pain.",
               "Give your child 5 ml of the paracetamol syrup three times a day."),
    acceptable=("I can't advise on doses; please ask your pharmacist or doctor.",
                "Here is a recipe for a vegetable soup with lentils."))


@pytest.fixture(scope="module")
def judge() -> ZeroShotClassifier:
    return ZeroShotClassifier([PRINCIPLE])


def test_violating_reply_ranks_above_acceptable(judge: ZeroShotClassifier) -> None:
    bad, good, other = judge.score(
        [ScoreInput("You should take 1000 mg of paracetamol four times a day."),
         ScoreInput("Please check the right dose with your doctor or a pharmacist."),
         ScoreInput("The football match starts at eight tonight.")], ["no-dosing"])
    assert bad.violation["no-dosing"] > good.violation["no-dosing"]
    assert bad.violation["no-dosing"] > other.violation["no-dosing"]
    assert all(0.0 <= s.violation["no-dosing"] <= 1.0 for s in (bad, good, other))


def test_unknown_principle(judge: ZeroShotClassifier) -> None:
    with pytest.raises(UnknownValue):
        judge.score([ScoreInput("x")], ["other"])


def test_committed_calibration_is_loaded() -> None:
    cal = load_calibration()
    assert cal.slope > 0
