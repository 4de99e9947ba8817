"""The gateway's services connect the request reader and the judge (issue 16): a prompt the
gate is unsure of gets the judge's second look from the reader's bottom layers (that the
instructions stay the same is ``tests/vilmo/test_shared_bottom.py``'s)."""

from __future__ import annotations

from pathlib import Path

from conftest import gateway_config_dict
from stub_upstream import StubUpstream

from proxy.services import build_services
from proxy.settings import GatewayConfig
from vilmo.instruct.generator import VilmoGenerator
from vilmo.instruct.shared_bottom import BottomStates
from vilmo.judge.graph_files import cached_file
from vilmo.judge.value_model import BuiltinClassifier
from vilmo.judge.value_onnx import shared_session

UNSURE = [f"{who} {what} (case {i}). What should I do?"
          for i, (who, what) in enumerate([("my neighbour", "insulted me"),
                                           ("a coworker", "lied to me"),
                                           ("my sister", "read my diary"),
                                           ("my landlord", "spread a rumour about me"),
                                           ("the referee", "cheated at cards"),
                                           ("a stranger online", "laughed at my accent")] * 2)]


def test_second_looks_start_from_the_readers_bottom(stub: StubUpstream, policy_dir: Path,
                                                     real_models: None) -> None:
    services = build_services(GatewayConfig.model_validate(
        gateway_config_dict(stub.url, policy_dir)))
    generator = services.instructions
    assert isinstance(generator, VilmoGenerator)
    reader, look = generator.reader, generator.second_look
    assert reader is not None and look is not None
    assert isinstance(look.judge, BuiltinClassifier)
    states = getattr(reader.on_bottom, "__self__", None)  # the BottomStates it keeps to
    assert isinstance(states, BottomStates)
    session = shared_session(cached_file(look.judge.graph_path()) or look.judge.graph_path(),
                             look.judge.threads)
    policy = services.policies.get("default")
    try:
        assert session.shortcut is not None
        hits = states.hits
        for text in UNSURE:
            generator.choose(text, policy)
        assert states.hits > hits  # some of them were in the gate's unsure band
    finally:
        session.shortcut = None
