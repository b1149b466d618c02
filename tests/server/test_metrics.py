"""Prometheus /metrics exposes per-version request, latency, queue, compute and batch figures."""

from __future__ import annotations

import httpx

from ortserve.bench.server import RunningServer
from ortserve.bench.server import metric_samples as samples


def test_metrics_count_successes_and_failures(server: RunningServer) -> None:
    version = {("model", "versioned"), ("version", "1")}
    before = samples(server)
    ok = httpx.post(f"{server.url}/v1/models/versioned/versions/1:predict", json={"instances": [[0.0] * 784]})
    bad = httpx.post(f"{server.url}/v1/models/versioned/versions/1:predict", json={"instances": [[0.0] * 3]})
    assert (ok.status_code, bad.status_code) == (200, 400)
    assert httpx.get(f"{server.url}/metrics").headers["content-type"].startswith("text/plain")
    after = samples(server)
    for outcome in ("success", "failure"):
        key = ("ortserve_requests_total", frozenset({*version, ("outcome", outcome)}))
        assert after[key] == before[key] + 1
    for family in ("request_duration_seconds", "queue_duration_seconds", "compute_duration_seconds"):
        key = (f"ortserve_{family}_count", frozenset(version))
        assert after[key] >= before[key] + 1
    assert after[("ortserve_in_flight_requests", frozenset(version))] == 0
