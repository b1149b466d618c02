"""Batch sizing at warmup, for what config.yaml leaves unset: how many rows a batch (and a request) may hold.
For a small model kept on one intra-op thread it also times ONNX Runtime's default thread pool beside it, for
runtime.threads to start from.

Measured, not assumed: batches from the default limit (32 rows; from 16 when a pool session is timed beside a
one-thread one) up, doubling, are timed on the version's sessions taking turns
(runtime.warmup.timed). Sizes are timed until two doublings in a row fail to cut the cost per row (on the
faster session) by more than the scheduler's ROW_COST_TOLERANCE, up to LARGEST_DEFAULT_ROWS, within
SIZING_BUDGET_NS of timing; an unconfigured limit is then the smallest size timed within that tolerance of the
cheapest (stopping at the first doubling that did not pay let one noisy timing set the limit).

With a pool session beside, every size up to LARGEST_DEFAULT_ROWS is timed (within the budget): the pool's cost
at a size does not follow from the smaller ones, because the other cores join only when they are free and the
runs long enough (four of six loads of the MLP timed the pool no faster than one thread up to 64 or 128 rows,
then at 2.3 against 3.9 us a row from 256 where that was timed; stopping at the flat part set the limit at 64 in
two of them). The sizes are then timed again, largest first, each keeping its cheaper pass: with
one pass, six loads set 512, 128, 512, 256, 256, 512, as a size caught in the pool's slow spell lost to a smaller
one.

Measured on 2 cores, MLP 784-256-10: one thread flattens at 260k rows/s from 32 rows, the pool of two runs 390k
at 32 and 490k at 512 when the second core is free (this shared machine's speed moves by 2x within a minute, so
the limit chosen varies from load to load). ResNet50's cost per row is flat from a few rows and a batch of 32
takes over a second: its probe is skipped and its limit stays at the default.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import onnxruntime as ort

from ortserve.runtime.costs import BatchCosts
from ortserve.runtime.scheduler import ROW_COST_TOLERANCE
from ortserve.runtime.signature import Signature
from ortserve.runtime.threads import POOL_FROM_ROWS
from ortserve.runtime.warmup import Tensors, runs_per_timing, timed, warmup_inputs

log = logging.getLogger(__name__)

LARGEST_DEFAULT_ROWS = 512
FLAT_DOUBLINGS = 2  # doublings in a row that do not pay before timing stops: one can be the machine's noise
SIZING_BUDGET_NS = 1_000_000_000


@dataclass(frozen=True)
class Sizing:
    max_batch_size: int
    # ns per row by batch rows, (one thread, pool), when a pool session was timed beside a one-thread one
    both: dict[int, tuple[float, float]] = field(default_factory=dict)


def size_batches(model: str, narrow: ort.InferenceSession, pool: ort.InferenceSession | None, signature: Signature,
                 shapes: dict[str, list[int]], max_batch_size: int, *, grow: bool, costs: BatchCosts,
                 samples: Tensors | None = None) -> Sizing:
    """Time larger batches on `narrow` (the version's session) and on `pool` (the default thread pool's, beside a
    one-thread narrow session), observing the faster time of each size into `costs`. `grow`: the limit was not
    configured and may double past `max_batch_size` while that pays."""
    if not costs.measured or (pool is None and not grow):
        return Sizing(max_batch_size)
    sessions = [narrow] if pool is None else [narrow, pool]
    runs = runs_per_timing(len(sessions))
    spent = 0.0
    per_row: dict[int, float] = {}
    both: dict[int, tuple[float, float]] = {}

    def time_size(rows: int) -> bool:
        """Time a batch of `rows` on every session, keeping each figure's cheapest so far (in `per_row`, `both`);
        False when it would overrun the budget."""
        nonlocal spent
        if spent + costs.cost_ns(rows) * runs * len(sessions) > SIZING_BUDGET_NS:
            return False
        times = timed(model, sessions, warmup_inputs(signature, rows, shapes, True, samples))
        spent += sum(times) * runs
        costs.observe(rows, min(times))
        per_row[rows] = min(per_row.get(rows, math.inf), min(times) / rows)
        if pool is not None:
            one, wide = both.get(rows, (math.inf, math.inf))
            both[rows] = (min(one, times[0] / rows), min(wide, times[1] / rows))
        return True

    flat = 0
    rows = min(POOL_FROM_ROWS, max_batch_size) if pool is not None else max_batch_size
    while rows <= (LARGEST_DEFAULT_ROWS if grow else max_batch_size) and (pool is not None or flat < FLAT_DOUBLINGS):
        cheapest = min(per_row.values(), default=math.inf)
        if not time_size(rows):
            break
        if rows > max_batch_size:
            flat = 0 if per_row[rows] < cheapest * (1 - ROW_COST_TOLERANCE) else flat + 1
        rows *= 2
    if pool is not None:  # the pool's speed at a size comes and goes with the other cores: a second pass
        for size in sorted(per_row, reverse=True):
            time_size(size)
    limit = _limit(per_row, max_batch_size)
    return Sizing(limit, {size: pair for size, pair in both.items() if size <= limit})


def _limit(per_row: dict[int, float], max_batch_size: int) -> int:
    """The smallest timed size from `max_batch_size` up whose cost per row is within ROW_COST_TOLERANCE of the
    cheapest timed: past it a bigger batch only adds latency and memory."""
    if not per_row:
        return max_batch_size
    cheapest = min(per_row.values())
    return min([size for size, ns in per_row.items() if size >= max_batch_size
                and ns <= cheapest * (1 + ROW_COST_TOLERANCE)], default=max_batch_size)


def describe(sizing: Sizing, costs: BatchCosts) -> str:
    """For the load's log line: the limit, the cost per row that chose it, and both sessions' where timed."""
    measured = ", ".join(f"{rows}: {ns / rows / 1e3:.2f}" for rows, ns in costs.sizes.items())
    text = f"batches up to {sizing.max_batch_size} rows (us per row by batch size: {measured})"
    if sizing.both:
        pairs = ", ".join(f"{rows}: {one / 1e3:.2f} / {pool / 1e3:.2f}" for rows, (one, pool) in sizing.both.items())
        text += (f"; from {POOL_FROM_ROWS} rows, the faster of one thread and ONNX Runtime's pool, as measured "
                 f"(us per row, one thread / pool: {pairs})")
    return text
