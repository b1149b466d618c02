"""Per-version counters and histograms, kept as plain numbers on the hot path and read at scrape time."""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, field

LATENCY_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                     2.5, 5.0, 10.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Histogram:
    """Cumulative-on-read histogram: `counts[i]` holds observations in (bounds[i-1], bounds[i]]."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last slot is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[float, int]]:
        running, result = 0, []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            result.append((bound, running))
        return result


@dataclass
class Duration:
    """A count and a total in nanoseconds, as Triton's statistics report them."""

    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += ns


@dataclass(frozen=True)
class ScalingEvent:
    """The instance scaler moved a version's instance count (runtime.instances)."""

    at: float  # time.time()
    instances_from: int
    instances_to: int
    reason: str


@dataclass
class VersionStats:
    success: Duration = field(default_factory=Duration)
    failure: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)  # merging request tensors into a batch
    compute: Duration = field(default_factory=Duration)  # session.run
    compute_output: Duration = field(default_factory=Duration)  # splitting batch outputs per request
    inference_rows: int = 0
    executions: int = 0
    in_flight: int = 0
    last_inference_ms: int = 0
    request_seconds: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS_S))
    queue_seconds: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS_S))
    compute_seconds: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS_S))
    batch_rows: Histogram = field(default_factory=lambda: Histogram(BATCH_SIZE_BUCKETS))
    per_batch_size: dict[int, Duration] = field(default_factory=dict)
    refusals: dict[str, int] = field(default_factory=dict)  # refused at admission, by reason
    drops: dict[str, int] = field(default_factory=dict)  # admitted, never run: expired, cancelled, stopped
    scalings: deque[ScalingEvent] = field(default_factory=lambda: deque(maxlen=20))  # the latest ones
    scaling_count: int = 0
    cache_hit: Duration = field(default_factory=Duration)  # lookups that found the answer, and their time
    cache_miss: Duration = field(default_factory=Duration)

    # Requests arrive on the event loop or the gRPC thread and finish on batch worker threads.
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def started(self) -> None:
        with self._lock:
            self.in_flight += 1

    def request_done(self, ns: int, ok: bool, *, was_queued: bool = False) -> None:
        """A request answered; `was_queued` when it had been counted in flight by started()."""
        with self._lock:
            if was_queued:
                self.in_flight -= 1
            (self.success if ok else self.failure).add(ns)
            self.request_seconds.observe(ns / 1e9)
            self.last_inference_ms = time.time_ns() // 1_000_000

    def refused(self, reason: str, ns: int) -> None:
        """A request refused at admission (it was never counted in flight)."""
        with self._lock:
            self.refusals[reason] = self.refusals.get(reason, 0) + 1
            self.failure.add(ns)
            self.request_seconds.observe(ns / 1e9)

    def dropped(self, reason: str, ns: int) -> None:
        """A queued request answered without running: past its deadline, its caller gone, or the server stopping."""
        with self._lock:
            self.in_flight -= 1
            self.drops[reason] = self.drops.get(reason, 0) + 1
            self.failure.add(ns)
            self.request_seconds.observe(ns / 1e9)

    def cache_looked_up(self, hit: bool, ns: int) -> None:
        with self._lock:
            (self.cache_hit if hit else self.cache_miss).add(ns)

    def scaled(self, event: ScalingEvent) -> None:
        with self._lock:
            self.scalings.append(event)
            self.scaling_count += 1

    def queued(self, ns: int) -> None:
        with self._lock:
            self.queue.add(ns)
            self.queue_seconds.observe(ns / 1e9)

    def ran_now(self, rows: int, queue_ns: int, compute_ns: int, request_ns: int, ok: bool) -> None:
        """A request run at once on its caller's thread, as a batch of its own (runtime.batcher's run_now): what
        queued(), batch_done() and request_done() count, under one lock. It is never counted in flight."""
        with self._lock:
            self.queue.add(queue_ns)
            self.queue_seconds.observe(queue_ns / 1e9)
            self._batch_done(rows, 0, compute_ns, 0)
            (self.success if ok else self.failure).add(request_ns)
            self.request_seconds.observe(request_ns / 1e9)
            self.last_inference_ms = time.time_ns() // 1_000_000

    def batch_done(self, rows: int, input_ns: int, compute_ns: int, output_ns: int) -> None:
        with self._lock:
            self._batch_done(rows, input_ns, compute_ns, output_ns)

    def _batch_done(self, rows: int, input_ns: int, compute_ns: int, output_ns: int) -> None:
        self.executions += 1
        self.inference_rows += rows
        self.compute_input.add(input_ns)
        self.compute.add(compute_ns)
        self.compute_output.add(output_ns)
        self.compute_seconds.observe(compute_ns / 1e9)
        self.batch_rows.observe(rows)
        by_size = self.per_batch_size.get(rows)
        if by_size is None:
            by_size = self.per_batch_size[rows] = Duration()
        by_size.add(compute_ns)
