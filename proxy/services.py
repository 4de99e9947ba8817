"""The services a request uses, built once per app from the config."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from proxy.audit import AuditSink, EmbeddedAuditSink, SinkFailures
from proxy.direct import build_upstream
from proxy.errors import KeyRateLimited, Redactor
from proxy.guard import ClassifierFor, Guard
from proxy.late import LateWork
from proxy.metrics import Metrics
from proxy.outcome import Facts
from proxy.record import Ledger
from proxy.refusals import LimitSampler
from proxy.settings import GatewayConfig
from proxy.stages import TimedUpstream, current_trace
from proxy.store import Store, VirtualKey
from proxy.trail import audit_record
from proxy.upstream import Upstream
from vilmo.instruct.generator import VilmoGenerator
from vilmo.instruct.instructions import InstructionGenerator
from vilmo.instruct.principles import PrincipleBank
from vilmo.instruct.second_look import SecondLook
from vilmo.instruct.shared_bottom import connect
from vilmo.instruct.stakes import StakesModel
from vilmo.instruct.stakes_reader import shipped_reader
from vilmo.judge.classifier import ScoreInput
from vilmo.judge.embedder import Int8Embedder, OnnxEmbedder
from vilmo.judge.value_model import BuiltinClassifier
from vilmo.policy_store import PolicyStore
from vilmo.verdict import rules_of

if TYPE_CHECKING:
    from vilmo.judge.policy_classifier import PolicyClassifiers


@dataclass(slots=True)
class Services:
    """Everything a request needs (see ``proxy.pipeline``)."""

    policies: PolicyStore
    instructions: InstructionGenerator
    bank: PrincipleBank
    upstream: Upstream
    guard: Guard
    metrics: Metrics
    audit: AuditSink
    config: GatewayConfig
    store: Store | None = None
    """The state store (keys, limits, the audit trail); opened by the app's lifespan."""
    redactor: Redactor = field(default_factory=Redactor)
    """Redacts the config's secrets from audited texts."""

    sink_failures: SinkFailures = field(default_factory=SinkFailures)
    """Failures of the record's sinks, logged (rate-limited) and counted."""
    late: LateWork = field(default_factory=LateWork)
    """Judgements of monitor streams whose client left, waited for at shutdown."""

    limit_refusals: LimitSampler = field(default_factory=LimitSampler)
    """Which refusals by a key's limits are audited (the middleware's and the route's)."""

    def __post_init__(self) -> None:
        if isinstance(self.audit, EmbeddedAuditSink):  # its backlog's failures, counted alike
            self.audit.on_failure = self._audit_file_failed

    def limit_refused(self, key: VirtualKey, refused: KeyRateLimited, default_code: str,
                      audited: bool = True) -> int | None:
        """Counts a refusal by ``key``'s limits (``vilmo_limit_rejections_total``) and says
        whether to audit it (``LimitSampler.audits``: its ``suppressed`` count, None: not
        audited; never when not ``audited``, a route that records nothing)."""
        code = refused.code or default_code
        self.metrics.limit_rejections.labels(key.name, code).inc()
        return self.limit_refusals.audits(f"{key.id}/{code}") if audited else None

    def finish(self, ledger: Ledger, status: str, error_code: str | None = None,
               facts: Facts | None = None) -> None:
        """Record the request (the store's trail, metrics, the audit sink), once: later calls
        are no-ops; a ledger a sampler left out of the audit (``Ledger.sample``) goes to the
        metrics only. Never raises: each sink fails alone (``SinkFailures``), so a full disk
        under the JSON Lines file neither changes the client's answer nor costs the store's
        trail its record; the trail is written first."""
        record = ledger.close(status, error_code, facts)
        if record is None:
            return
        trace = current_trace.get()
        if self.store is not None and ledger.audited:  # never blocks: a background writer
            try:
                self.store.audit.write(audit_record(record, trace, self.redactor))
            except Exception as error:  # noqa: BLE001 - the request's answer stands
                self.sink_failures.failed("audit_dropped", error, self.store)
        try:
            self.metrics.record(record, trace)
        except Exception as error:  # noqa: BLE001 - the request's answer stands
            self.sink_failures.failed("metrics", error, self.store)
        if not ledger.audited:
            return
        try:
            self.audit.write(record)  # never waits for the file's lock (proxy.audit)
        except Exception as error:  # noqa: BLE001 - the request's answer stands
            self.sink_failures.failed("audit_file", error, self.store)

    def _audit_file_failed(self, error: BaseException) -> None:
        self.sink_failures.failed("audit_file", error, self.store)

    async def aclose(self) -> None:
        """At shutdown, before the store closes: the late judgements (bounded; they need the
        checks' batchers and record to the store), the audit file's backlog (bounded), the
        batchers, and the direct path's pooled HTTP client."""
        await self.late.drain()
        if isinstance(self.audit, EmbeddedAuditSink):
            await asyncio.to_thread(self.audit.close)
        await self.guard.aclose()
        close = getattr(self.upstream, "aclose", None)
        if close is not None:
            await close()


def build_judge(embedder: OnnxEmbedder | None = None) -> PolicyClassifiers:
    """The value judge the gateway checks with (also what bench/compare_litellm.py rates)."""
    from vilmo.judge.policy_classifier import PolicyClassifiers

    return PolicyClassifiers(encoder=embedder or OnnxEmbedder(quantized=False))


def build_services(config: GatewayConfig, classifier_for: ClassifierFor | None = None,
                   ) -> Services:
    """The real services: policies from disk, VILMO / relevance instructions, the upstream
    (direct or LiteLLM, ``proxy.direct``), and the built-in value classifier (with zero-shot
    scoring of each policy's own principles)."""
    redact = Redactor(config.secrets())
    # fp32, for the zero-shot judge (its calibration was fitted on fp32 embeddings): the ONNX
    # graph of the same network, so serving needs no torch (``vilmo warmup`` builds it).
    embedder = OnnxEmbedder(quantized=False)
    bank = PrincipleBank.load()
    second_look = None
    if classifier_for is None:
        classifiers = build_judge(embedder)
        # The instruction step's second look reads the prompt with the same built-in judge the
        # input check runs, so the prompt is read once whichever of the two asks first.
        second_look = SecondLook(classifiers.builtin)
        classifier_for = classifiers
    # The instruction step reads every prompt: the request reader where shipped (one int8 pass
    # gives the embedding and the values at stake), else the int8 encoder and stakes.npz.
    reader = shipped_reader()
    generator = VilmoGenerator(bank, reader or Int8Embedder(), StakesModel.load(),
                               base_dir=config.policy_dir, second_look=second_look)
    if reader is not None and second_look is not None and isinstance(second_look.judge,
                                                                      BuiltinClassifier):
        # The judge's pass over a prompt the reader has just read runs its top layers only.
        connect(reader, second_look.judge)
    policies = PolicyStore(config.policy_dir, config.default_policy,
                           config.server.policy_reload_interval_s, check=generator.check)
    metrics = Metrics([d.model_name for d in config.model_list])
    for name in policies.names():  # load models and embed principles before traffic
        policy = policies.get(name)
        generator.generate([{"role": "user", "content": "warm-up"}], policy)
        generator.prepare(policy)  # "warm-up" has no value at stake: its principles too
        if policy.checks.output or policy.checks.input:
            classifier_for(policy).score([ScoreInput("warm-up")], list(rules_of(policy)))
    if second_look is not None:  # loaded even when no policy checks anything
        second_look.judge.score([ScoreInput("warm-up")], ["mft.care"])
    return Services(
        policies=policies,
        instructions=generator,
        bank=bank,
        upstream=TimedUpstream(build_upstream(config, redact)),
        guard=Guard(classifier_for, metrics),
        metrics=metrics,
        audit=EmbeddedAuditSink(config.audit.path, config.audit.memory_records,
                                config.audit.max_file_bytes, config.audit.rotated_files),
        config=config,
        redactor=redact,
    )
