"""Prometheus metrics of the gateway, in a registry of its own (one per app, so tests and
several apps in a process never collide)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from proxy.edge_protocols import EDGE_REASONS, EdgeReason
from proxy.record import RequestRecord
from proxy.settings import configured_name
from proxy.stages import Trace
from proxy.store import StoreHealth
from vilmo.verdict import Verdict

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


OTHER_MODEL = "other"

STORE_OPERATIONS = ("keys", "limits", "cache", "audit", "prune", "audit_dropped", "audit_file",
                    "metrics")
"""Operations ``vilmo_store_errors_total`` always exports (0 until one fails), so an alert can
watch them from the start; any other operation the store counted is exported too. Records lost
are ``audit_dropped`` (one the store and the spool refused on its own, or one the request path
could not hand over); ``audit_file`` counts failed writes of the JSON Lines audit file and
``metrics`` records these metrics could not count (``Services.finish``)."""


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
        self.guard_load_failures = Counter(
            "vilmo_guard_load_failures", "Failures of the value guard caused by load, also "
            "counted in vilmo_guard_errors_total: an instruction step refused, never started, "
            "started late or slowed by load (503 with Retry-After whatever on_error), a check "
            "refused as overloaded.", ["stage"], registry=self.registry)
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
        self.tokens = Counter(
            "vilmo_tokens", "Tokens the upstream reported (usage.total_tokens), by model and "
            "client key name.", ["model", "key"], registry=self.registry)
        self.stage_seconds = Histogram(
            "vilmo_stage_duration_seconds", "Time per stage of a request: instruction, "
            "upstream (streams: to the first chunk), check, total.", ["stage"],
            buckets=LATENCY_BUCKETS, registry=self.registry)
        self.overhead_seconds = Histogram(
            "vilmo_overhead_duration_seconds", "The gateway's own time: total less upstream "
            "(plain replies that reached the upstream).", buckets=LATENCY_BUCKETS,
            registry=self.registry)
        self.limit_rejections = Counter(
            "vilmo_limit_rejections", "Requests refused with 429 by a virtual key's limits.",
            ["key", "reason"], registry=self.registry)
        self.edge_refusals = Counter(
            "vilmo_edge_refusals", "Requests the HTTP edge refused before the app (no request "
            "metric or audit record has them), by reason: read_timeout (408), head_too_large "
            "(431), connection_limit, request_limit, pipeline_limit (503), malformed (400), "
            "host_not_allowed (421).",
            ["reason"], registry=self.registry)
        for reason in EDGE_REASONS:  # exported from the start at 0, for alerts
            self.edge_refusals.labels(reason)
        self.registry.register(_StateCollector(self))
        self.store_health: Callable[[], StoreHealth] | None = None
        """Set when the store is opened; read at each scrape."""
        self.cache_counts: Callable[[], Mapping[str, tuple[int, int]]] | None = None
        """(hits, misses) by cache (instruction, embedding), read at each scrape."""

    def record(self, record: RequestRecord, trace: Trace | None = None) -> None:
        stream = "true" if record.stream else "false"
        model = configured_name(record.model, self.model_names) or OTHER_MODEL
        self.requests.labels(model, record.policy, stream, record.status).inc()
        self.request_seconds.labels(stream).observe(record.duration_s)
        if record.generator:
            self.instruction_seconds.labels(record.generator).observe(record.instruction_s)
        for principle in record.principles:
            self.principles.labels(record.policy, principle).inc()
        self.stage_seconds.labels("total").observe(record.duration_s)
        if record.generator:
            self.stage_seconds.labels("instruction").observe(record.instruction_s)
        if trace is not None:
            if trace.tokens:
                self.tokens.labels(model, record.caller).inc(trace.tokens)
            if trace.upstream:
                self.stage_seconds.labels("upstream").observe(trace.upstream)
                if not record.stream:
                    self.overhead_seconds.observe(max(0.0, record.duration_s - trace.upstream))
            if trace.check:
                self.stage_seconds.labels("check").observe(trace.check)

    def edge_refused(self, reason: EdgeReason) -> None:
        """A refusal at the edge (``proxy.edge_protocols``: ``EDGE_COUNTER``)."""
        self.edge_refusals.labels(reason).inc()

    def record_verdict(self, policy: str, stage: str, verdict: Verdict) -> None:
        self.checks.labels(policy, stage, verdict.action.value).inc()
        for violation in verdict.violations:
            self.violations.labels(policy, stage, violation.value_id).inc()
        for value_id, score in verdict.scores.items():
            self.value_scores.labels(value_id).observe(score)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector(Collector):
    """Read at scrape time: the store's health and the instruction cache's counters."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        cache = CounterMetricFamily(
            "vilmo_cache_requests", "Lookups of the store's instruction and prompt-embedding "
            "caches (a store failure is a miss).", labels=["cache", "result"])
        if self.metrics.cache_counts is not None:
            for name, (hits, misses) in sorted(self.metrics.cache_counts().items()):
                cache.add_metric([name, "hit"], hits)
                cache.add_metric([name, "miss"], misses)
        yield cache
        health = self.metrics.store_health() if self.metrics.store_health else None
        errors = CounterMetricFamily("vilmo_store_errors", "Failed store operations.",
                                     labels=["operation"])
        spool = GaugeMetricFamily("vilmo_store_spool_depth",
                                  "Audit records waiting in the local spool for the store.")
        queue = GaugeMetricFamily("vilmo_store_audit_queue",
                                  "Audit records waiting for the background writer.")
        reachable = GaugeMetricFamily("vilmo_store_reachable",
                                      "1 while the store answers, 0 after a failure.")
        degraded = CounterMetricFamily("vilmo_limit_degraded",
                                       "Limit decisions made by limits_on_error (store down).")
        if health is not None:
            for operation in sorted({*STORE_OPERATIONS, *health.errors}):
                errors.add_metric([operation], health.errors.get(operation, 0))
            spool.add_metric([], health.spool_depth)
            queue.add_metric([], health.audit_queue)
            reachable.add_metric([], 1.0 if health.reachable else 0.0)
            degraded.add_metric([], health.degraded_limits)
        yield from (errors, spool, queue, reachable, degraded)
