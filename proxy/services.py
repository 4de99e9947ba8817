"""The services a request uses, built once per app from the config."""

from __future__ import annotations

from dataclasses import dataclass, field

from proxy.audit import AuditSink, EmbeddedAuditSink
from proxy.errors import Redactor
from proxy.guard import ClassifierFor, Guard
from proxy.metrics import Metrics
from proxy.outcome import Facts
from proxy.record import Ledger
from proxy.settings import GatewayConfig
from proxy.stages import TimedUpstream, current_trace
from proxy.store import Store
from proxy.trail import audit_record
from proxy.upstream import LiteLLMUpstream, Upstream
from vilmo.instruct.generator import VilmoGenerator
from vilmo.instruct.instructions import InstructionGenerator
from vilmo.instruct.principles import PrincipleBank
from vilmo.instruct.stakes import StakesModel
from vilmo.judge.classifier import ScoreInput
from vilmo.judge.embedder import Int8Embedder, OnnxEmbedder
from vilmo.policy_store import PolicyStore
from vilmo.verdict import rules_of


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

    def finish(self, ledger: Ledger, status: str, error_code: str | None = None,
               facts: Facts | None = None) -> None:
        """Record the request (metrics, audit sink, the store's trail), once: later calls are
        no-ops."""
        record = ledger.close(status, error_code, facts)
        if record is not None:
            trace = current_trace.get()
            self.metrics.record(record, trace)
            self.audit.write(record)
            if self.store is not None:  # never blocks: a background writer (or the spool)
                self.store.audit.write(audit_record(record, trace, self.redactor))


def build_services(config: GatewayConfig, classifier_for: ClassifierFor | None = None,
                   ) -> Services:
    """The real services: policies from disk, VILMO / relevance instructions, LiteLLM
    upstream, and the built-in value classifier (with zero-shot scoring of each policy's own
    principles)."""
    redact = Redactor(config.secrets())
    # fp32, for the zero-shot judge (its calibration was fitted on fp32 embeddings): the ONNX
    # graph of the same network, so serving needs no torch (``vilmo warmup`` builds it).
    embedder = OnnxEmbedder(quantized=False)
    bank = PrincipleBank.load()
    # The instruction step embeds every prompt: the int8 graph, several times faster.
    generator = VilmoGenerator(bank, Int8Embedder(), StakesModel.load(),
                               base_dir=config.policy_dir)
    policies = PolicyStore(config.policy_dir, config.default_policy,
                           config.server.policy_reload_interval_s, check=generator.check)
    metrics = Metrics([d.model_name for d in config.model_list])
    if classifier_for is None:
        from vilmo.judge.policy_classifier import PolicyClassifiers

        classifier_for = PolicyClassifiers(encoder=embedder)
    for name in policies.names():  # load models and embed principles before traffic
        policy = policies.get(name)
        generator.generate([{"role": "user", "content": "warm-up"}], policy)
        if policy.checks.output or policy.checks.input:
            classifier_for(policy).score([ScoreInput("warm-up")], list(rules_of(policy)))
    return Services(
        policies=policies,
        instructions=generator,
        bank=bank,
        upstream=TimedUpstream(LiteLLMUpstream(config.model_list, config.router_settings, redact)),
        guard=Guard(classifier_for, metrics),
        metrics=metrics,
        audit=EmbeddedAuditSink(config.audit.path, config.audit.memory_records),
        config=config,
        redactor=redact,
    )
