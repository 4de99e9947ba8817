"""What the audit trail says a reply was and what the gateway did with it, through a served
gateway (the keyword fake judge, the stub upstream, the real store's trail):

- with ``n > 1`` each choice's text is kept with its own verdict: the trail kept the first
  choice's text and labelled it with the worst choice's violations, so ``vilmo export
  negatives`` wrote a calm reply as a ``mft.care`` violation;
- ``enforced`` and ``stream_mode`` say what the gateway did, beside the policy's ``action``: a
  monitor stream that relayed a violent reply was recorded (and counted on the dashboard) as
  a block, a chunked stream under a regenerate rule as a regeneration (it was refused);
- ``vilmo_checks_total{stage="output"}`` counts one check per reply in every mode (a chunked
  stream counted one per choice).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ADMIN_KEY, gateway_config_dict
from fakes import upstream_services
from streams import ASK
from stub_upstream import ServerThread, StubUpstream

from proxy.app import create_app
from proxy.services import Services
from proxy.settings import GatewayConfig
from proxy.store.negatives import negative_samples
from proxy.store.records import AuditQuery, AuditRecord
from proxy.summary import summarize

CALM = "Talk to your neighbour calmly and kindly. It usually helps."
VIOLENT = "Go over there and stab him in the face. That will teach him."


@pytest.fixture(scope="module")
def served(stub: StubUpstream, policy_dir: Path) -> Iterator[tuple[str, Services]]:
    """The gateway's /v1 URL and its services (fakes but the upstream adapter and store)."""
    config = GatewayConfig.model_validate(gateway_config_dict(stub.url, policy_dir))
    config.store.path = policy_dir.parent / "outcomes" / "state.db"
    services = upstream_services(config, policy_dir)
    with ServerThread(create_app(config, lambda _: services)) as server:
        yield f"{server.url}/v1", services


def ask(url: str, policy: str, stream: bool, **body: Any) -> tuple[str, str]:
    """The request's id and everything a client could read of it."""
    request = {"model": "stub", "messages": ASK, "stream": stream, **body}
    headers = {"Authorization": f"Bearer {ADMIN_KEY}", "X-Vilmo-Policy": policy}
    with httpx.stream("POST", f"{url}/chat/completions", json=request, headers=headers,
                      timeout=60) as response:
        text = response.read().decode()
    assert response.status_code == 200, text
    return response.headers["x-request-id"], text


def record(services: Services, request_id: str) -> AuditRecord:
    """The trail's record of a request (written by a background writer: waited for)."""
    assert services.store is not None
    for _ in range(100):
        found = [r for r in services.store.export_audit(AuditQuery()) if r.id == request_id]
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no audit record of {request_id}")


def output_checks(services: Services, policy: str) -> float:
    return sum(sample.value for family in services.metrics.registry.collect()
               if family.name == "vilmo_checks" for sample in family.samples
               if sample.name.endswith("_total") and sample.labels["policy"] == policy
               and sample.labels["stage"] == "output")


@pytest.mark.parametrize(("policy", "stream"), [("g-block-buffer", False),
                                                ("g-block-buffer", True),
                                                ("g-block-chunked", True),
                                                ("g-block-monitor", True)])
def test_each_choice_is_kept_with_its_own_verdict(served: tuple[str, Services],
                                                  stub: StubUpstream, policy: str,
                                                  stream: bool) -> None:
    url, services = served
    stub.script = [{"content": CALM}, {"content": VIOLENT}]
    request_id, _ = ask(url, policy, stream, n=2)
    data = record(services, request_id).data
    reply = data["reply"]
    assert isinstance(reply, dict)
    assert (reply["text"], reply["values"]) == (VIOLENT, ["mft.care"])
    assert reply["index"] == 1
    assert reply["choices"] == [{"index": 0, "text": CALM, "values": []},
                                {"index": 1, "text": VIOLENT, "values": ["mft.care"]}]
    audited = record(services, request_id)
    samples = list(negative_samples([audited], "d2o"))
    assert [(s["rejected"], s["violated_values"]) for s in samples] == [(VIOLENT, ["mft.care"])]


def test_one_choice_keeps_the_record_as_it_was(served: tuple[str, Services],
                                               stub: StubUpstream) -> None:
    url, services = served
    stub.reply = VIOLENT
    request_id, _ = ask(url, "g-block-buffer", False)
    assert record(services, request_id).data["reply"] == {"text": VIOLENT,
                                                          "values": ["mft.care"]}


@pytest.mark.parametrize("policy", ["g-block-buffer", "g-block-chunked"])
def test_a_reply_is_one_output_check_in_every_mode(served: tuple[str, Services],
                                                   stub: StubUpstream, policy: str) -> None:
    url, services = served
    stub.script = [{"content": CALM}, {"content": VIOLENT}]
    before = output_checks(services, policy)
    ask(url, policy, True, n=2)
    assert output_checks(services, policy) - before == 1


ENFORCED = [  # policy, stream, (the policy's action, what was enforced, the stream mode)
    ("g-block-monitor", True, ("block", "relayed", "monitor")),
    ("g-regenerate-monitor", True, ("regenerate", "relayed", "monitor")),
    ("g-regenerate-chunked", True, ("regenerate", "refused", "chunked")),
    ("g-block-chunked", True, ("block", "refused", "chunked")),
    ("g-block-buffer", True, ("block", "refused", "buffer")),
    ("g-block-buffer", False, ("block", "refused", None)),
    ("g-annotate-buffer", False, ("annotate", "annotated", None)),
    ("g-allow-buffer", True, ("allow", "relayed", "buffer")),
]


@pytest.mark.parametrize(("policy", "stream", "expected"), ENFORCED)
def test_the_record_says_what_the_gateway_did(served: tuple[str, Services], stub: StubUpstream,
                                              policy: str, stream: bool,
                                              expected: tuple[str, str, str | None]) -> None:
    url, services = served
    stub.reply = VIOLENT
    request_id, _ = ask(url, policy, stream)
    audited = record(services, request_id)
    assert (audited.action, audited.data["enforced"], audited.data["stream_mode"]) == expected


def test_a_regeneration_that_passed_is_recorded_as_regenerated(
        served: tuple[str, Services], stub: StubUpstream) -> None:
    url, services = served
    stub.reply, stub.reply_when_warned = VIOLENT, CALM
    for stream in (False, True):
        request_id, text = ask(url, "g-regenerate-buffer", stream)
        audited = record(services, request_id)
        assert "teach" not in text and audited.data["regenerations"] == 1
        assert (audited.action, audited.data["enforced"]) == ("allow", "regenerated")


def test_the_summary_counts_what_was_enforced(served: tuple[str, Services],
                                              stub: StubUpstream) -> None:
    url, services = served
    stub.reply = VIOLENT
    ids = [ask(url, policy, True)[0] for policy in ("g-block-monitor", "g-regenerate-chunked")]
    records = [record(services, request_id) for request_id in ids]
    summary = summarize(records, {}, 0.0, time.time() + 60, 3600.0)
    assert summary["actions"] == {"block": 1, "regenerate": 1}  # the policy's, as before
    assert summary["enforced"] == {"relayed": 1, "refused": 1}
    assert summary["regenerations"] == 0
    flagged = summary["flagged"]
    assert isinstance(flagged, list)
    assert sorted(f["enforced"] for f in flagged) == ["refused", "relayed"]
