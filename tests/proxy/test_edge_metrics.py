"""Requests the HTTP edge refuses (``proxy.edge_protocols``: 408, 431, 503, 400) are counted in
``vilmo_edge_refusals_total`` by reason, a fixed set exported from the start at 0. Before the
fix they reached no route, metric or audit record: an operator saw none of them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import fake_services
from test_server_edge import (
    DEADLINE_S,
    HEALTHZ_CLOSE,
    LIMIT,
    answer,
    chat_request,
    connect,
    edge_server,
    read_all,
)

from proxy.edge_protocols import EDGE_REASONS
from proxy.metrics import Metrics
from proxy.server import MAX_HEAD_BYTES, PARSERS
from vilmo.instruct.principles import PrincipleBank


@pytest.fixture(scope="module", params=PARSERS)
def served(request: pytest.FixtureRequest, policy_dir: Path, bank: PrincipleBank,
           ) -> Iterator[tuple[int, Metrics, str]]:
    """The port, the app's metrics and the parser."""
    services = fake_services(policy_dir, bank)
    with edge_server(policy_dir, bank, request.param, services) as port:
        yield port, services.metrics, request.param


def refusals(metrics: Metrics) -> dict[str, float]:
    """``vilmo_edge_refusals_total`` by reason, as the exposition has it."""
    prefix = 'vilmo_edge_refusals_total{reason="'
    return {line[len(prefix):].split('"', 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in metrics.exposition().decode().splitlines() if line.startswith(prefix)}


def refused_once(metrics: Metrics, before: dict[str, float], reason: str) -> bool:
    """Whether exactly one refusal more was counted since ``before``, for ``reason`` (polled:
    the count is made as the answer is written)."""
    deadline = time.monotonic() + 2
    while True:
        after = refusals(metrics)
        changed = {r: after[r] - before[r] for r in after if after[r] != before[r]}
        if changed or time.monotonic() > deadline:
            return changed == {reason: 1.0}
        time.sleep(0.02)


def test_every_reason_is_exported_from_the_start(served: tuple[int, Metrics, str]) -> None:
    assert set(refusals(served[1])) == set(EDGE_REASONS)


def test_an_unfinished_request_is_counted_as_a_read_timeout(
        served: tuple[int, Metrics, str]) -> None:
    port, metrics, _ = served
    before = refusals(metrics)
    with connect(port) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        assert answer(read_all(conn))[0] == 408
    assert refused_once(metrics, before, "read_timeout")


def test_a_large_head_is_counted_as_head_too_large(served: tuple[int, Metrics, str]) -> None:
    port, metrics, _ = served
    before = refusals(metrics)
    with connect(port) as conn:
        conn.sendall(chat_request(extra=f"X-Big: {'a' * (MAX_HEAD_BYTES + 10)}\r\n"))
        assert answer(read_all(conn))[0] == 431
    assert refused_once(metrics, before, "head_too_large")


def test_a_malformed_request_is_counted_as_malformed(served: tuple[int, Metrics, str]) -> None:
    port, metrics, _ = served
    before = refusals(metrics)
    with connect(port) as conn:
        conn.sendall(b"GARBAGE\r\n\r\n")
        assert answer(read_all(conn))[0] == 400
    assert refused_once(metrics, before, "malformed")


def test_a_connection_past_the_limit_is_counted_as_connection_limit(
        served: tuple[int, Metrics, str]) -> None:
    port, metrics, _ = served
    held = [connect(port) for _ in range(LIMIT)]
    try:
        time.sleep(0.2)
        before = refusals(metrics)
        with connect(port) as extra:
            assert answer(read_all(extra))[0] == 503
        assert refused_once(metrics, before, "connection_limit")
    finally:
        for conn in held:
            conn.close()
    time.sleep(DEADLINE_S / 4)  # the held connections are gone before the next test


def test_a_pipeline_past_its_bound_is_counted_as_pipeline_limit(
        served: tuple[int, Metrics, str]) -> None:
    port, metrics, parser = served
    if parser == "h11":
        pytest.skip("h11 parses one request at a time: its pipelines are not bounded")
    before = refusals(metrics)
    with connect(port) as conn:
        conn.sendall(HEALTHZ_CLOSE.replace(b"close", b"keep-alive") * 199 + HEALTHZ_CLOSE)
        assert b"HTTP/1.1 503 " in read_all(conn)
    assert refused_once(metrics, before, "pipeline_limit")
