"""A request the client left (status 499) was recorded with ``enforced: null``, as if the
gateway had done nothing to say: the dashboard's and the summary's count of what was done left
it out. It is ``abandoned`` now; a refusal the client left stays ``refused``."""

from __future__ import annotations

import pytest

from proxy.outcome import Facts
from proxy.record import build_record
from vilmo.policy import Action
from vilmo.verdict import Verdict


def verdict(action: Action) -> Verdict:
    return Verdict(scores={}, action=action)


@pytest.mark.parametrize("facts", [
    Facts(),  # a plain reply left before the upstream answered
    Facts(stream=True, mode="buffer"),
    Facts(stream=True, mode="monitor", reply=verdict(Action.BLOCK)),  # judged what it sent
    Facts(stream=True, mode="chunked", reply=verdict(Action.ALLOW)),
])
def test_a_request_the_client_left_is_recorded_as_abandoned(facts: Facts) -> None:
    record = build_record("req-x", "team", 0.0, facts, "499", "client_closed")
    assert record.enforced == "abandoned"
    assert record.to_json()["enforced"] == "abandoned"


def test_a_refusal_the_client_left_is_still_refused() -> None:
    assert build_record("req-x", "team", 0.0, Facts(refused=True), "499").enforced == "refused"


def test_other_failures_stay_null() -> None:
    assert build_record("req-x", "team", 0.0, Facts(), "502", "upstream_error").enforced is None
