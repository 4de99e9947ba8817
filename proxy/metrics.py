"""Prometheus metrics of the gateway, in a registry of its own (one per app, so tests and
several apps in a process never collide)."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from proxy.record import RequestRecord
from proxy.settings import configured_name
from vilmo.verdict import Verdict

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


OTHER_MODEL = "other"


class Metrics:
    """``model_names`` are the config's model_list names: the only model labels (a request for
    ``stub-x`` served by the entry ``stub-*`` counts as ``stub-*``, an unknown one as
    ``other``), so clients cannot grow the label set."""

    def __init__(self, model_names: Sequence[str] = ()) -> None:
        self.model_names = list(model_names)
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "vilmo_requests", "Chat completion requests by outcome.",
            ["model", "policy", "stream", "status"], registry=self.registry)
        self.request_seconds = Histogram(
            "vilmo_request_duration_seconds", "Time from request to the last byte.",
            ["stream"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.instruction_seconds = Histogram(
            "vilmo_instruction_duration_seconds", "Time to generate the value instruction.",
            ["generator"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.principles = Counter(
            "vilmo_instruction_principles", "Principles injected into requests.",
            ["policy", "principle"], registry=self.registry)
        self.guard_errors = Counter(
            "vilmo_guard_errors", "Failures of the value guard (instruction or check).",
            ["stage"], registry=self.registry)
        self.checks = Counter(
            "vilmo_checks", "Value checks by the action they called for.",
            ["policy", "stage", "action"], registry=self.registry)
        self.violations = Counter(
            "vilmo_violations", "Values at or above their threshold.",
            ["policy", "stage", "value"], registry=self.registry)
        self.value_scores = Histogram(
            "vilmo_value_score", "Violation probability per checked value.",
            ["value"], buckets=(0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
            registry=self.registry)
        self.regenerations = Counter(
            "vilmo_regenerations", "Upstream calls repeated with a stronger instruction.",
            ["policy"], registry=self.registry)

    def record(self, record: RequestRecord) -> None:
        stream = "true" if record.stream else "false"
        model = configured_name(record.model, self.model_names) or OTHER_MODEL
        self.requests.labels(model, record.policy, stream, record.status).inc()
        self.request_seconds.labels(stream).observe(record.duration_s)
        if record.generator:
            self.instruction_seconds.labels(record.generator).observe(record.instruction_s)
        for principle in record.principles:
            self.principles.labels(record.policy, principle).inc()

    def record_verdict(self, policy: str, stage: str, verdict: Verdict) -> None:
        self.checks.labels(policy, stage, verdict.action.value).inc()
        for violation in verdict.violations:
            self.violations.labels(policy, stage, violation.value_id).inc()
        for value_id, score in verdict.scores.items():
            self.value_scores.labels(value_id).observe(score)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
