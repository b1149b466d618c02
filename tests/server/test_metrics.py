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


def test_the_schedulers_choices_are_visible(server: RunningServer) -> None:
    """With no config.yaml the scheduler chooses; what it chose and why shows in /metrics and the statistics."""
    httpx.post(f"{server.url}/v1/models/mlp:predict", json={"instances": [[0.0] * 784]})
    version = frozenset({("model", "mlp"), ("version", "1")})
    metrics = samples(server)
    assert metrics[("ortserve_instances", version)] == 1
    stats = httpx.get(f"{server.url}/v2/models/mlp/stats").json()["model_stats"][0]["ortserve"]
    # the derived max_batch_size: the default 32, doubled at warmup while rows got cheaper (runtime.sizing)
    derived = stats["scheduler"]["max_batch_size"]
    assert derived in (32, 64, 128, 256, 512)
    # rows grow only while a row gets cheaper, within the derived max_batch_size, never under 8
    row_limit = metrics[("ortserve_batch_row_limit", version)]
    assert 8 <= row_limit <= derived
    assert metrics[("ortserve_queue_bound_rows", version)] >= 64
    assert metrics[("ortserve_queue_rows", version)] == 0
    assert metrics[("ortserve_batch_row_cost_seconds", version)] + metrics[
        ("ortserve_batch_fixed_cost_seconds", version)] > 0  # measured at warmup
    assert stats["scheduler"]["delay"] == "adaptive"
    assert stats["queue"]["bound_rows"] == metrics[("ortserve_queue_bound_rows", version)]
    assert stats["instances"]["count"] == 1 and stats["instances"]["intra_op_threads"] >= 0
    configured = httpx.get(f"{server.url}/v2/models/slow_batch/stats").json()["model_stats"][0]["ortserve"]
    assert configured["scheduler"]["delay"] == "configured" and configured["scheduler"]["max_wait_us"] == 200_000
