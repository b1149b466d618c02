"""How long a batch waits and how many rows it takes, chosen from what the batcher measures.

Explicit settings (`max_queue_delay_us`, `preferred_batch_sizes`) are kept as given. Left unset, they are chosen
continuously from two measurements:
- the batch cost line (runtime.costs): `fixed + per_row * rows` for one run;
- the refill time: how long after a batch ends as many rows have arrived again as that batch answered
  (callers in a closed loop come back once answered; in an open loop it is those rows' arrival time).

Rows per batch: the smallest batch whose cost per row is within ROW_COST_TOLERANCE of the largest allowed
batch's. Past it, bigger batches buy almost no throughput but make every row in them wait for the whole batch.
Where per-row cost barely falls with size (a large CNN on a CPU) this is a few rows, and callers beyond it
queue for the next batch while this one runs, so the model is never idle waiting for them.

Waiting: when the model is free and fewer rows are queued than are expected (those left queued plus those the
last batch answered), it waits only if the expected batch, counting the wait still expected for it, runs more
rows per second than the queued rows would now (each batch also costing a hand-over to the worker thread, which
is measured too); and never longer than IDLE_SHARE of that batch's cost or one hand-over, whichever is longer,
nor past the oldest request's deadline. A lone caller is never kept waiting (nothing more is expected), and a fast
model never waits (its run costs less than any refill); a model with a large fixed cost under steady callers
waits for full batches.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from ortserve.runtime.costs import BatchCosts

log = logging.getLogger(__name__)

ROW_COST_TOLERANCE = 0.02
IDLE_SHARE = 0.1
RUN_HERE_BELOW_NS = 1_000_000  # batches faster than this may run on the caller's thread (runtime.batcher)
FAST_SAMPLE = 8
SLO_BATCH_SHARE = 0.5  # under a latency objective, one batch may take at most this share of it
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

    def __init__(self, policy: BatchingPolicy, costs: BatchCosts | None = None, instances: int = 1) -> None:
        self.policy = policy
        self.costs = costs or BatchCosts()
        self._costs_by_instances = {instances: self.costs}
        self.refill_ns: float | None = None
        self.dispatch_ns = 0.0  # running mean of dispatched()
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
        self.costs = self._costs_by_instances.setdefault(count, BatchCosts())
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

    def cost_ns(self, rows: int) -> float:
        return self.costs.cost_ns(rows)

    def wait_ns(self, queued_rows: int, expected_rows: int, waited_ns: int, head_deadline_left_ns: int | None
                ) -> int:
        """How much longer the queued rows should wait for company (0: run now)."""
        limit = self.row_limit
        if limit == 0 or queued_rows >= limit:
            return 0
        reached = [size for size in self.policy.preferred_batch_sizes if size <= queued_rows]
        if reached:
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
        refill_left = (cap if self.refill_ns is None else self.refill_ns) - waited_ns
        if waited_ns >= cap or refill_left < -self._late_allowance():
            return 0
        refill_left = max(refill_left, 0.0)
        later_cost = self.dispatch_ns + self.cost_ns(target)
        if head_deadline_left_ns is not None and refill_left + later_cost > head_deadline_left_ns:
            return 0
        now_cost = self.dispatch_ns + self.cost_ns(queued_rows)
        if now_cost <= 0:
            return 0
        if target / (refill_left + later_cost) <= queued_rows / now_cost:
            return 0
        return int(cap - waited_ns)

    def dispatched(self, ns: int) -> None:
        """How long a request waited for a worker that was free when it came (a thread wake-up, mostly)."""
        self.dispatch_ns += _SMOOTHING * (ns - self.dispatch_ns)

    def _wait_cap_ns(self, rows: int) -> float:
        """The longest a batch of `rows` is worth waiting for: IDLE_SHARE of its run, or one hand-over to a worker,
        which a batch of its own would cost too."""
        return max(IDLE_SHARE * self.cost_ns(rows), self.dispatch_ns)

    def batch_rows(self, queued_rows: int) -> int:
        """How many rows to take now: the largest preferred size reached, else up to the row limit."""
        if self.row_limit == 0:
            return 0
        reached = [size for size in self.policy.preferred_batch_sizes if size <= queued_rows]
        return min(reached[-1], self.row_limit) if reached else self.row_limit

    def choices(self) -> Choices:
        return Choices(self.row_limit, self.adaptive_delay, self._max_wait_ns(), self.costs.fixed_ns,
                       self.costs.per_row_ns, self.refill_ns, self.fast)

    def _max_wait_ns(self) -> float:
        """The longest a batch may now wait for company."""
        if not self.adaptive_delay:
            assert self.policy.max_queue_delay_ns is not None
            return float(self.policy.max_queue_delay_ns)
        if not self.costs.measured or self.row_limit == 0:
            return 0.0
        return self._wait_cap_ns(self.row_limit)

    def _late_allowance(self) -> float:
        """How far past the usual refill time expected rows are still waited for."""
        return self.refill_ns or 0.0

    def _update_limit(self) -> None:
        largest = self.policy.max_batch_size
        if largest <= 1 or not self.costs.measured:
            self.row_limit = largest
            return
        fixed, per_row = self.costs.fixed_ns, self.costs.per_row_ns
        limit = largest
        spare = (1 + ROW_COST_TOLERANCE) * (fixed / largest + per_row) - per_row
        if self.adaptive_delay and spare > 0:  # a configured delay means batching as configured
            limit = min(largest, max(1, math.ceil(fixed / spare - 1e-9)))
        if self.policy.latency_slo_ns is not None and per_row > 0:
            budget = SLO_BATCH_SHARE * self.policy.latency_slo_ns
            limit = min(limit, max(1, int((budget - fixed) // per_row)))
        if limit != self.row_limit:
            log.debug("batches of up to %d rows (was %d): a batch costs %.1f us + %.2f us per row", limit,
                      self.row_limit, fixed / 1e3, per_row / 1e3)
        self.row_limit = limit
