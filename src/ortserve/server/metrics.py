"""Prometheus exposition of the per-version statistics, read at scrape time (nothing on the request path)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ortserve.runtime.registry import ModelRegistry
from ortserve.runtime.stats import Histogram
from ortserve.server.http import Request, Response, Router

_LABELS = ["model", "version"]


def _histogram(family: HistogramMetricFamily, labels: list[str], histogram: Histogram) -> None:
    buckets = [("+Inf" if bound == float("inf") else repr(float(bound)), count)
               for bound, count in histogram.cumulative()]
    family.add_metric(labels, buckets, histogram.total)


class _StatsCollector:
    def __init__(self, registry: ModelRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("ortserve_requests", "Inference requests by outcome",
                                       labels=[*_LABELS, "outcome"])
        rows = CounterMetricFamily("ortserve_inference_rows", "Batch rows inferred", labels=_LABELS)
        executions = CounterMetricFamily("ortserve_executions", "session.run calls (batches)", labels=_LABELS)
        in_flight = GaugeMetricFamily("ortserve_in_flight_requests", "Requests being served now", labels=_LABELS)
        latency = HistogramMetricFamily("ortserve_request_duration_seconds",
                                        "Request time in the core: validation, queue, compute, split",
                                        labels=_LABELS)
        queue = HistogramMetricFamily("ortserve_queue_duration_seconds", "Time waiting for a batch", labels=_LABELS)
        compute = HistogramMetricFamily("ortserve_compute_duration_seconds", "session.run time per batch",
                                        labels=_LABELS)
        batch = HistogramMetricFamily("ortserve_batch_size", "Rows per executed batch", labels=_LABELS)
        for model in self._registry.models.values():
            for served in model.versions.values():
                labels = [served.model, str(served.version)]
                stats = served.stats
                requests.add_metric([*labels, "success"], stats.success.count)
                requests.add_metric([*labels, "failure"], stats.failure.count)
                rows.add_metric(labels, stats.inference_rows)
                executions.add_metric(labels, stats.executions)
                in_flight.add_metric(labels, stats.in_flight)
                _histogram(latency, labels, stats.request_seconds)
                _histogram(queue, labels, stats.queue_seconds)
                _histogram(compute, labels, stats.compute_seconds)
                _histogram(batch, labels, stats.batch_rows)
        yield from (requests, rows, executions, in_flight, latency, queue, compute, batch)


class Metrics:
    def __init__(self, registry: ModelRegistry) -> None:
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(_StatsCollector(registry))

    def routes(self, router: Router) -> None:
        router.add("GET", "/metrics", self.scrape)

    async def scrape(self, request: Request, params: dict[str, str]) -> Response:
        return Response(200, generate_latest(self._registry), CONTENT_TYPE_LATEST.encode())
