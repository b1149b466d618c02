"""How long a batch waits and how many rows it takes, chosen from what the batcher measures.

Explicit settings (`max_queue_delay_us`, `preferred_batch_sizes`) are kept as given. Left unset, the wait is
chosen continuously from three measurements:
- the batch cost line (runtime.costs): `fixed + per_row * rows` for one run;
- the refill time: how long after a batch ends as many rows have arrived again as that batch answered
  (callers in a closed loop come back once answered; in an open loop it is those rows' arrival time), measured
  only while the model waits for them, or runs fast batches (runtime.batcher): a batch started at once takes the
  cores from the returning callers and the gRPC or HTTP thread that reads them, so the refill it measures is its
  own doing (a memory-bound model at c=8 measured 3.7 ms that way, ran halves of the callers in turn, and
  reached 863 requests/s, where waiting for all eight ran 1,110-1,265/s: docs/benchmarks.md). A refill time older
  than REFILL_FRESH_NS is measured again by waiting once more: the callers may have changed;
- the hand-over time: how long a request waits for a worker that was free when it came (a thread wake-up),
  counted only while measured within REFILL_FRESH_NS: a fast model's batches run on the callers' threads, with
  no hand-over to measure, and a burst's (the workers waiting for the GIL: 2 ms) would otherwise stay.

Waiting: when an instance is free and fewer rows are queued than are expected (those left queued plus those the
last batch answered), the batch waits for them only while they are expected within its wait cap: IDLE_SHARE of
the expected batch's run, the batch's fixed cost (the missing rows in a batch of their own would cost it again:
what a memory-bound model, whose weights are read once a batch, saves by waiting), or one hand-over (a batch of
its own would cost a hand-over too), whichever is longest.
It never waits past the oldest request's deadline; rows that do not come (an open loop) cost at most the cap.
So a lone caller is never kept waiting (nothing more is expected), and a fast model, whose callers take longer
to come back than its batch takes to run, never waits.

Splitting the callers into halves that run while the other half comes back was tried and measured worse on
2 CPU cores (ResNet50 0.94 of the in-process ceiling against 0.96 waiting for full batches, its INT8 version 0.80
against 0.90): the callers' coming back is CPU work too (decoding 600 KB requests, and the clients' own), which
then competes with the batch instead of filling the gap between batches.

Rows per batch: up to `max_batch_size`, but no more than the smallest batch whose cost per row (by the fitted
line) is within ROW_COST_TOLERANCE of the largest's, nor fewer than MIN_ROW_LIMIT (the size warmup times, below
which the line is not trusted): past it a bigger batch only adds latency and memory. Under a latency objective
(`latency_slo_ms`), no more than a batch that runs in SLO_BATCH_SHARE of it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from ortserve.runtime.costs import BatchCosts

log = logging.getLogger(__name__)

IDLE_SHARE = 0.2
ROW_COST_TOLERANCE = 0.02
MIN_ROW_LIMIT = 8  # the batch size warmup times: below it the fitted line is not trusted to limit batches
RUN_HERE_BELOW_NS = 1_000_000  # batches faster than this may run on the caller's thread (runtime.batcher)
FAST_SAMPLE = 8
OUTLIER_RUNS = 20
SLO_BATCH_SHARE = 0.5  # under a latency objective, one batch may take at most this share of it
REFILL_FRESH_NS = 1_000_000_000
_SMOOTHING = 0.2


@dataclass(frozen=True)
class Choices:
    """What the scheduler chose, and the measurements behind it (statistics, metrics)."""

    row_limit: int
    adaptive: bool  # False: max_queue_delay_us is configured
    max_wait_ns: float
    batch_fixed_cost_ns: float
    batch_row_cost_ns: float
    refill_ns: float | None
    dispatch_ns: float
    drain_ns_per_row: float | None
    runs_on_caller_thread: bool


@dataclass(frozen=True)
class BatchingPolicy:
    """The batching settings of one served version, as configured (None: chosen by the scheduler)."""

    max_batch_size: int  # 0: the model has no batch dimension; one request per run
    max_queue_delay_ns: int | None = None
    preferred_batch_sizes: tuple[int, ...] = ()
    latency_slo_ns: int | None = None


class Scheduler:
    """Not thread-safe: the batcher calls it under its lock."""

    def __init__(self, policy: BatchingPolicy, costs: BatchCosts | None = None, instances: int = 1, *,
                 clock: Callable[[], int] = time.perf_counter_ns) -> None:
        self.policy = policy
        self._clock = clock
        self.costs = costs or BatchCosts()
        self.costs.age_with(clock)
        self._costs_by_instances = {instances: self.costs}
        self.refill_ns: float | None = None
        self._refilled_at_ns = 0
        self.dispatch_ns = 0.0  # running mean of dispatched()
        self._dispatched_at_ns = 0
        self.drain_ns_per_row: float | None = None  # running mean of drained()
        self._run_ns = float(RUN_HERE_BELOW_NS)  # whole batch time (merge, run, split); starts undecided
        self._batches = 0
        self.row_limit = policy.max_batch_size
        self._update_limit()

    @property
    def adaptive_delay(self) -> bool:
        return self.policy.max_queue_delay_ns is None

    @property
    def fast(self) -> bool:
        """Batches are quick enough to run on a caller's thread, and no configured delay asks to wait."""
        return not self.policy.max_queue_delay_ns and self._run_ns < RUN_HERE_BELOW_NS

    def use_instances(self, count: int) -> None:
        """Batch costs are measured per instance count: instances divide the cores, and run side by side."""
        costs = self._costs_by_instances.get(count)
        if costs is None:
            costs = self._costs_by_instances[count] = BatchCosts()
            costs.age_with(self._clock)
        self.costs = costs
        self._update_limit()

    def batch_done(self, rows: int, compute_ns: int, whole_ns: int) -> None:
        self._run_ns += _SMOOTHING * (whole_ns - self._run_ns)
        self._batches += 1
        # a fast model runs thousands of batches a second: every FAST_SAMPLE-th is plenty to fit its costs
        if not self.fast or self._batches % FAST_SAMPLE == 0:
            self.costs.observe(rows, compute_ns)
            self._update_limit()

    def refilled(self, ns: int) -> None:
        self.refill_ns = float(ns) if self.refill_ns is None else self.refill_ns + _SMOOTHING * (ns - self.refill_ns)
        self._refilled_at_ns = self._clock()

    def dispatched(self, ns: int) -> None:
        """How long a request waited for a worker that was free when it came (a thread wake-up, mostly)."""
        self.dispatch_ns += _SMOOTHING * (ns - self.dispatch_ns)
        self._dispatched_at_ns = self._clock()

    def drained(self, rows: int, ns: int) -> None:
        """A batch of `rows` was answered `ns` after the one before, with a backlog in between: the version's
        service rate, everything included. A gap far longer than the batch's run (a pause of the whole process)
        says nothing about the rate and is left out."""
        if self.costs.measured and ns > OUTLIER_RUNS * self.cost_ns(rows):
            return
        per_row = ns / max(rows, 1)
        current = self.drain_ns_per_row
        self.drain_ns_per_row = per_row if current is None else current + _SMOOTHING * (per_row - current)

    def cost_ns(self, rows: int) -> float:
        return self.costs.cost_ns(rows)

    def wait_ns(self, queued_rows: int, expected_rows: int, waited_ns: int, head_deadline_left_ns: int | None
                ) -> int:
        """How much longer the queued rows should wait for company (0: run now)."""
        limit = self.row_limit
        if limit == 0 or queued_rows >= limit:
            return 0
        if any(size <= queued_rows for size in self.policy.preferred_batch_sizes):
            return 0
        if not self.adaptive_delay:
            assert self.policy.max_queue_delay_ns is not None
            if queued_rows >= expected_rows:
                return 0
            return self.policy.max_queue_delay_ns - waited_ns
        target = min(expected_rows, limit)
        if target <= queued_rows or not self.costs.measured:
            return 0
        cap = self._wait_cap_ns(target)
        if waited_ns >= cap:
            return 0
        wait = cap - waited_ns
        if head_deadline_left_ns is not None and wait + self.cost_ns(target) > head_deadline_left_ns:
            return 0
        return int(wait)

    def batch_rows(self, queued_rows: int) -> int:
        """How many rows to take now: the largest preferred size reached, else up to the row limit."""
        if self.row_limit == 0:
            return 0
        reached = [size for size in self.policy.preferred_batch_sizes if size <= queued_rows]
        return min(reached[-1], self.row_limit) if reached else self.row_limit

    def choices(self) -> Choices:
        return Choices(self.row_limit, self.adaptive_delay, self._max_wait_ns(), self.costs.fixed_ns,
                       self.costs.per_row_ns, self.refill_ns, self.dispatch_ns, self.drain_ns_per_row, self.fast)

    def _wait_cap_ns(self, rows: int) -> float:
        """The longest a batch of `rows` is worth waiting for: IDLE_SHARE of its run, or what a batch of the
        missing rows would cost again (its fixed cost, a hand-over to a worker); 0 when callers were lately measured
        to come back later than that."""
        now = self._clock()
        dispatch = self.dispatch_ns if now - self._dispatched_at_ns < REFILL_FRESH_NS else 0.0
        cap = max(IDLE_SHARE * self.cost_ns(rows), self.costs.fixed_ns, dispatch)
        if self.refill_ns is None or self.refill_ns <= cap:
            return cap
        return cap if now - self._refilled_at_ns >= REFILL_FRESH_NS else 0.0

    def _max_wait_ns(self) -> float:
        """The longest a batch may now wait for company."""
        if not self.adaptive_delay:
            assert self.policy.max_queue_delay_ns is not None
            return float(self.policy.max_queue_delay_ns)
        if not self.costs.measured or self.row_limit == 0:
            return 0.0
        return self._wait_cap_ns(self.row_limit)

    def _update_limit(self) -> None:
        limit = largest = self.policy.max_batch_size
        fixed, per_row = self.costs.fixed_ns, self.costs.per_row_ns
        spare = ROW_COST_TOLERANCE * (fixed / max(largest, 1) + per_row)
        if self.adaptive_delay and largest > MIN_ROW_LIMIT and self.costs.measured and spare > 0:
            # past this size a bigger batch saves under ROW_COST_TOLERANCE a row: it only adds latency and memory
            limit = min(largest, max(MIN_ROW_LIMIT, math.ceil(fixed / spare)))
        slo = self.policy.latency_slo_ns
        if limit > 1 and slo is not None and self.costs.measured and per_row > 0:
            fitting = int((SLO_BATCH_SHARE * slo - fixed) // per_row)
            limit = min(limit, max(1, fitting))
        if limit != self.row_limit:
            log.debug("batches of up to %d rows (was %d): a batch costs %.1f us + %.2f us per row", limit,
                      self.row_limit, fixed / 1e3, per_row / 1e3)
        self.row_limit = limit
