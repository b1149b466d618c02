"""Prometheus exposition of the per-version statistics, read at scrape time (nothing on the request path)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ortserve.runtime.gpu import GpuMonitor
from ortserve.runtime.registry import ModelRegistry
from ortserve.runtime.stats import Histogram
from ortserve.server.dataplane import DataPlane
from ortserve.server.http import Request, Response, Router

_LABELS = ["model", "version"]


def _histogram(family: HistogramMetricFamily, labels: list[str], histogram: Histogram) -> None:
    buckets = [("+Inf" if bound == float("inf") else repr(float(bound)), count)
               for bound, count in histogram.cumulative()]
    family.add_metric(labels, buckets, histogram.total)


class _StatsCollector:
    def __init__(self, registry: ModelRegistry) -> None:
        self._registry = registry

    def _scheduling(self) -> Iterator[Metric]:
        """Admission, queue, the scheduler's current choices and instances, per version."""
        refused = CounterMetricFamily("ortserve_refused_requests", "Requests refused at admission, by reason "
                                      "(queue_full, deadline, latency_slo, expired)", labels=[*_LABELS, "reason"])
        dropped = CounterMetricFamily("ortserve_dropped_requests", "Admitted requests answered without running, by "
                                      "reason (expired, cancelled, stopped)", labels=[*_LABELS, "reason"])
        queue_rows = GaugeMetricFamily("ortserve_queue_rows", "Rows queued for a batch", labels=_LABELS)
        queue_requests = GaugeMetricFamily("ortserve_queue_requests", "Requests queued for a batch", labels=_LABELS)
        bound = GaugeMetricFamily("ortserve_queue_bound_rows", "Most rows the queue takes (absent: unbounded)",
                                  labels=_LABELS)
        row_limit = GaugeMetricFamily("ortserve_batch_row_limit", "Most rows the scheduler lets a batch take now",
                                      labels=_LABELS)
        max_wait = GaugeMetricFamily("ortserve_batch_max_wait_seconds", "Longest a batch may now wait for more rows",
                                     labels=_LABELS)
        fixed = GaugeMetricFamily("ortserve_batch_fixed_cost_seconds", "Measured fixed cost of one batch",
                                  labels=_LABELS)
        per_row = GaugeMetricFamily("ortserve_batch_row_cost_seconds", "Measured cost of each row in a batch",
                                    labels=_LABELS)
        instances = GaugeMetricFamily("ortserve_instances", "Instances (sessions) running batches", labels=_LABELS)
        scalings = CounterMetricFamily("ortserve_instance_changes", "Changes of the instance count by the scaler",
                                       labels=_LABELS)
        for model in self._registry.models.values():
            for served in model.versions.values():
                labels = [served.model, str(served.version)]
                stats = served.stats
                for reason, count in sorted(stats.refusals.items()):
                    refused.add_metric([*labels, reason], count)
                for reason, count in sorted(stats.drops.items()):
                    dropped.add_metric([*labels, reason], count)
                scalings.add_metric(labels, stats.scaling_count)
                batcher = served.batcher
                if batcher is None:
                    continue
                state, choices = batcher.state(), batcher.choices()
                queue_rows.add_metric(labels, state.queued_rows)
                queue_requests.add_metric(labels, state.queued_requests)
                if state.queue_bound is not None:
                    bound.add_metric(labels, state.queue_bound)
                instances.add_metric(labels, state.instances)
                row_limit.add_metric(labels, choices.row_limit)
                max_wait.add_metric(labels, choices.max_wait_ns / 1e9)
                fixed.add_metric(labels, choices.batch_fixed_cost_ns / 1e9)
                per_row.add_metric(labels, choices.batch_row_cost_ns / 1e9)
        yield from (refused, dropped, queue_rows, queue_requests, bound, row_limit, max_wait, fixed, per_row,
                    instances, scalings)

    def _cache(self) -> Iterator[Metric]:
        hits = CounterMetricFamily("ortserve_cache_hits", "Requests answered from the response cache", labels=_LABELS)
        misses = CounterMetricFamily("ortserve_cache_misses", "Cache lookups that found no answer", labels=_LABELS)
        size = GaugeMetricFamily("ortserve_cache_bytes", "Bytes of answers held in the response cache",
                                 labels=_LABELS)
        evictions = CounterMetricFamily("ortserve_cache_evictions", "Answers dropped to stay within max_bytes",
                                        labels=_LABELS)
        for model in self._registry.models.values():
            for served in model.versions.values():
                if served.cache is None:
                    continue
                labels, counts = [served.model, str(served.version)], served.cache.counts
                hits.add_metric(labels, counts.hits)
                misses.add_metric(labels, counts.misses)
                size.add_metric(labels, counts.bytes)
                evictions.add_metric(labels, counts.evictions)
        yield from (hits, misses, size, evictions)

    def _shadow(self) -> Iterator[Metric]:
        """Per model with a shadow: what happened to the copies, and how its answers agree, per output."""
        copies = CounterMetricFamily("ortserve_shadow_copies", "Requests copied to the shadow version, by outcome "
                                     "(compared, dropped: no idle core, failed)", labels=[*_LABELS, "outcome"])
        by_output = [*_LABELS, "output"]
        rows = CounterMetricFamily("ortserve_shadow_rows", "Rows compared with the shadow's", labels=by_output)
        top1_rows = CounterMetricFamily("ortserve_shadow_top1_rows", "Rows of class scores compared",
                                        labels=by_output)
        top1 = CounterMetricFamily("ortserve_shadow_top1_agreed_rows", "Rows whose top class the shadow shares",
                                   labels=by_output)
        cosine = CounterMetricFamily("ortserve_shadow_cosine_sum", "Sum over compared rows of the cosine between "
                                     "the served and the shadow row", labels=by_output)
        error = GaugeMetricFamily("ortserve_shadow_max_abs_error", "Largest absolute difference seen in any "
                                  "element", labels=by_output)
        for model in self._registry.models.values():
            lane = model.shadow
            if lane is None:
                continue
            labels, stats = [model.name, str(lane.target_version)], lane.stats
            copies.add_metric([*labels, "compared"], stats.compared)
            copies.add_metric([*labels, "dropped"], stats.dropped)
            copies.add_metric([*labels, "failed"], stats.failed)
            for output, agreement in sorted(stats.outputs.items()):
                named = [*labels, output]
                rows.add_metric(named, agreement.rows)
                top1_rows.add_metric(named, agreement.top1_rows)
                top1.add_metric(named, agreement.top1_agreed)
                cosine.add_metric(named, agreement.cosine_sum)
                error.add_metric(named, agreement.max_abs_error)
        yield from (copies, rows, top1_rows, top1, cosine, error)

    def _groups(self) -> Iterator[Metric]:
        chosen = CounterMetricFamily("ortserve_group_requests", "Requests a variant group sent to each member",
                                     labels=["model", "member"])
        failed = CounterMetricFamily("ortserve_group_member_failures", "Requests a member failed (unavailable or "
                                     "broken; not refusals for load)", labels=["model", "member"])
        latency = GaugeMetricFamily("ortserve_group_member_latency_seconds", "The group's running average of a "
                                    "member's request time", labels=["model", "member"])
        for model in self._registry.models.values():
            if model.group is None:
                continue
            for member, load in model.group.loads.items():
                chosen.add_metric([model.name, member], load.chosen)
                failed.add_metric([model.name, member], load.failed)
                latency.add_metric([model.name, member], load.latency_ns / 1e9)
        yield from (chosen, failed, latency)

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
        yield from self._scheduling()
        yield from self._cache()
        yield from self._shadow()
        yield from self._groups()


class _GpuCollector:
    def __init__(self, gpus: GpuMonitor) -> None:
        self._gpus = gpus

    def collect(self) -> Iterator[Metric]:
        readings = self._gpus.read()
        if not readings:
            return
        labels = ["gpu", "name"]
        utilization = GaugeMetricFamily("ortserve_gpu_utilization_ratio", "Share of time a kernel ran (NVML)",
                                        labels=labels)
        used = GaugeMetricFamily("ortserve_gpu_memory_used_bytes", "GPU memory in use (NVML)", labels=labels)
        total = GaugeMetricFamily("ortserve_gpu_memory_total_bytes", "GPU memory in all (NVML)", labels=labels)
        for reading in readings:
            device = [str(reading.index), reading.name]
            utilization.add_metric(device, reading.utilization)
            used.add_metric(device, reading.memory_used_bytes)
            total.add_metric(device, reading.memory_total_bytes)
        yield from (utilization, used, total)


class Metrics:
    def __init__(self, plane: DataPlane) -> None:
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(_StatsCollector(plane.registry))
        self._registry.register(_GpuCollector(plane.gpus))

    @property
    def registry(self) -> CollectorRegistry:
        """The collectors, for an exporter other than the /metrics page (Ray's metrics: ortserve.ray)."""
        return self._registry

    def routes(self, router: Router) -> None:
        router.add("GET", "/metrics", self.scrape)

    async def scrape(self, request: Request, params: dict[str, str]) -> Response:
        return Response(200, generate_latest(self._registry), CONTENT_TYPE_LATEST.encode())
