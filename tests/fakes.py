"""Fakes for the gateway's seams, one per seam: ``KeywordClassifier`` (the value classifier),
``FakeUpstream`` (``complete`` and ``stream``), ``FakeInstructions`` (the instruction
generator) and ``MemoryAudit`` (the audit sink). ``fake_services`` wires them into the
gateway's ``Services`` so that the whole request flow runs in process without loading a model.
The real classifier is tested in tests/vilmo and wired in tests/proxy/test_real_classifier.py.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import httpx
from fastapi import FastAPI

from proxy import step_lanes
from proxy.app import create_app
from proxy.errors import GatewayError
from proxy.guard import Guard
from proxy.metrics import Metrics
from proxy.protocol import UpstreamParams
from proxy.record import RequestRecord
from proxy.replies import ChatCompletion, ChatCompletionChunk, ReplyMessage
from proxy.services import Services
from proxy.settings import Deployment, GatewayConfig, ServerSettings
from vilmo.instruct.instructions import Instruction
from vilmo.instruct.principles import PrincipleBank
from vilmo.judge.classifier import ClassifierError, ScoreInput, ValueScores
from vilmo.policy import Policy
from vilmo.policy_store import PolicyStore
from vilmo.types import Messages

HIGH, LOW = 0.95, 0.02
KEYWORDS = {
    "mft.care": ("punch", "stab", "poison"),
    "safety.violence": ("punch", "stab", "poison"),
    "mft.fairness": ("cheat", "rig the"),
    "custom/no-doses": ("mg of",),
}
CRASH, SLOW = "CLASSIFIER-CRASH", "CLASSIFIER-SLOW"


class KeywordClassifier:
    """Scores HIGH for an id when one of its keywords is in the text, LOW otherwise."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], list[str]]] = []

    def score(self, items: Sequence[ScoreInput], value_ids: Sequence[str]) -> list[ValueScores]:
        texts = [item.response for item in items]
        self.calls.append((texts, list(value_ids)))
        if any(CRASH in t for t in texts):
            raise ClassifierError("the fake classifier was told to crash")
        if any(SLOW in t for t in texts):
            time.sleep(3.0)
        return [ValueScores({v: HIGH if any(k in t.lower() for k in KEYWORDS.get(v, ())) else LOW
                             for v in value_ids}) for t in texts]


class StalledClassifier(KeywordClassifier):
    """The keyword fake whose every call waits for ``release``: a judge that runs past any
    check timeout (as the real one does on a long enough text). Set ``release`` when the test
    ends, so that no worker thread is left waiting."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def score(self, items: Sequence[ScoreInput], value_ids: Sequence[str]) -> list[ValueScores]:
        self.release.wait(10)
        return super().score(items, value_ids)


# --- the gateway's other seams, for the in-process tier (tests/proxy/test_flow_*.py) ---------

CALM = "Talk to your neighbour calmly and kindly. It usually helps."
VIOLENT = "Go over there and punch him in the face. That will teach him."


class FakeUpstream:
    """The ``Upstream`` seam, scripted: ``complete`` and ``stream`` answer ``reply`` (or
    ``reply_when_warned`` when the request carries a strengthened instruction), streamed word
    by word; ``fail`` is raised instead, ``fail_after`` chunks into a stream. Every call's
    params are kept in ``calls``."""

    def __init__(self, models: Sequence[str] = ("stub",)) -> None:
        self.models = list(models)
        self.reply = CALM
        self.reply_when_warned: str | None = None
        self.fail: GatewayError | None = None
        self.fail_after: int | None = None
        self.calls: list[UpstreamParams] = []
        self.streams_closed_early = 0

    def serves(self, model: str) -> bool:
        return model in self.models

    def model_names(self) -> list[str]:
        return list(self.models)

    def _text(self, params: UpstreamParams) -> str:
        self.calls.append(params)
        warned = any("went against" in str(m.get("content")) for m in params["messages"])
        return self.reply_when_warned if warned and self.reply_when_warned else self.reply

    async def complete(self, params: UpstreamParams) -> ChatCompletion:
        text = self._text(params)
        if self.fail is not None:
            raise self.fail
        return {"id": "chatcmpl-fake", "object": "chat.completion", "created": 1,
                "model": str(params["model"]),
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}}

    async def stream(self, params: UpstreamParams) -> AsyncIterator[ChatCompletionChunk]:
        text = self._text(params)
        if self.fail is not None and not self.fail_after:
            raise self.fail
        words = text.split(" ")
        finished = False
        try:
            for i, word in enumerate(words):
                if self.fail is not None and i == self.fail_after:
                    raise self.fail
                delta: ReplyMessage = {"content": word if i == 0 else f" {word}"}
                if i == 0:
                    delta["role"] = "assistant"
                yield self._chunk(params, delta, None)
                await asyncio.sleep(0)
            yield self._chunk(params, {}, "stop")
            finished = True
        finally:
            self.streams_closed_early += not finished

    @staticmethod
    def _chunk(params: UpstreamParams, delta: ReplyMessage, finish: str | None,
               ) -> ChatCompletionChunk:
        return {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1,
                "model": str(params["model"]),
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


class FakeInstructions:
    """The ``InstructionGenerator`` seam: one fixed instruction (no model is loaded)."""

    TEXT = "Respect care: do not encourage harm."

    def __init__(self) -> None:
        self.prompts: list[Messages] = []

    def generate(self, messages: Messages, policy: Policy) -> Instruction:
        self.prompts.append(messages)
        return Instruction(self.TEXT, ("care-1",), "fake", ("mft.care",))


class MemoryAudit:
    """The ``AuditSink`` seam: the records, in order."""

    def __init__(self) -> None:
        self.records: list[RequestRecord] = []

    def write(self, record: RequestRecord) -> None:
        self.records.append(record)


def fake_services(policy_dir: Path, bank: PrincipleBank, upstream: FakeUpstream | None = None,
                  classifier: KeywordClassifier | None = None) -> Services:
    """The gateway's services with every model replaced by a fake (nothing loads a model)."""
    config = GatewayConfig(model_list=[Deployment(model_name="stub",
                                                  litellm_params={"model": "openai/stub"})],
                           policy_dir=policy_dir,
                           server=ServerSettings(policy_reload_interval_s=0,
                                                 allowed_hosts=["*"]))  # in process: any name
    metrics = Metrics(["stub"])
    judge = classifier or KeywordClassifier()
    return Services(policies=PolicyStore(policy_dir, "default", 0),
                    instructions=FakeInstructions(), bank=bank,
                    upstream=upstream or FakeUpstream(), guard=Guard(lambda p: judge, metrics),
                    metrics=metrics, audit=MemoryAudit(), config=config)


def upstream_services(config: GatewayConfig, policy_dir: Path) -> Services:
    """``fake_services`` but for ``config``'s real upstream adapter (timed, redacting the
    config's secrets) and store: a served gateway's traffic as sent, no model loaded."""
    from proxy.direct import build_upstream  # the upstream adapters: only their users load them
    from proxy.errors import Redactor
    from proxy.stages import TimedUpstream

    services = fake_services(policy_dir, PrincipleBank.load())
    services.config = config
    services.redactor = Redactor(config.secrets())
    services.upstream = TimedUpstream(build_upstream(config, services.redactor))
    return services


def app_with(services: Services) -> FastAPI:
    """The gateway app over ``services`` (its lifespan is not needed: they are built)."""
    app = create_app(services.config, lambda config: services)
    app.state.services = services
    return app


async def post_chat(services: Services, body: dict[str, object],
                    headers: dict[str, str] | None = None) -> httpx.Response:
    """POST /v1/chat/completions to the app in process (``httpx.ASGITransport``)."""
    transport = httpx.ASGITransport(app=app_with(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        return await client.post("/v1/chat/completions", json=body, headers=headers or {})


def on_its_cpu_all_along(native_id: int, ident: int) -> step_lanes.ThreadTimes:
    """A step thread's times as if it ran on a CPU the whole time (its own long work): a test
    whose step waits on an event to be slow stands for that with it, since a thread kept off
    its CPU ran out for the load (``proxy.step_lanes.slowed_by_load``)."""
    wall = time.monotonic()
    return step_lanes.ThreadTimes(wall, on_cpu=wall)
