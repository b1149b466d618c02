"""Batch sizing at warmup, for what config.yaml leaves unset: how many rows a batch (and a request) may hold.
For a small model kept on one intra-op thread it also times ONNX Runtime's default thread pool beside it, for
runtime.threads to start from.

Measured, not assumed: batches from the default limit (32 rows; from 16 when a pool session is timed beside a
one-thread one) up, doubling, are timed on the version's sessions taking turns run by run
(runtime.warmup.timed). An unconfigured limit doubles while doubling cuts the cost per row (on the faster
session) by more than the scheduler's ROW_COST_TOLERANCE, up to LARGEST_DEFAULT_ROWS, within SIZING_BUDGET_NS
of timing. Measured on 2 cores, MLP 784-256-10: one thread flattens at 260k rows/s from 32 rows, the pool of
two runs 390k at 32 and 490k at 512 when the second core is free (this shared machine's speed moves by 2x
within a minute, so the limit chosen varies from load to load: 64 to 512). ResNet50's cost per row is flat from
a few rows and a batch of 32 takes over a second: its probe is skipped and its limit stays at the default.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import onnxruntime as ort

from ortserve.runtime.costs import BatchCosts
from ortserve.runtime.scheduler import ROW_COST_TOLERANCE
from ortserve.runtime.signature import Signature
from ortserve.runtime.threads import POOL_FROM_ROWS
from ortserve.runtime.warmup import timed, zero_inputs

log = logging.getLogger(__name__)

LARGEST_DEFAULT_ROWS = 512
SIZING_BUDGET_NS = 1_000_000_000
_RUNS_PER_TIMING = 6  # warmup.timed: one untimed run, then the median of five


@dataclass(frozen=True)
class Sizing:
    max_batch_size: int
    # ns per row by batch rows, (one thread, pool), when a pool session was timed beside a one-thread one
    both: dict[int, tuple[float, float]] = field(default_factory=dict)


def size_batches(model: str, narrow: ort.InferenceSession, pool: ort.InferenceSession | None, signature: Signature,
                 shapes: dict[str, list[int]], max_batch_size: int, *, grow: bool, costs: BatchCosts) -> Sizing:
    """Time larger batches on `narrow` (the version's session) and on `pool` (the default thread pool's, beside a
    one-thread narrow session), observing the faster time of each size into `costs`. `grow`: the limit was not
    configured and may double past `max_batch_size` while that pays."""
    if not costs.measured or (pool is None and not grow):
        return Sizing(max_batch_size)
    sessions = [narrow] if pool is None else [narrow, pool]
    spent, limit = 0.0, max_batch_size
    per_row: dict[int, float] = {}
    both: dict[int, tuple[float, float]] = {}
    rows = min(POOL_FROM_ROWS, max_batch_size) if pool is not None else max_batch_size
    while rows <= (LARGEST_DEFAULT_ROWS if grow else max_batch_size):
        if spent + costs.cost_ns(rows) * _RUNS_PER_TIMING * len(sessions) > SIZING_BUDGET_NS:
            break
        times = timed(model, sessions, zero_inputs(signature, rows, shapes, True))
        spent += sum(times) * _RUNS_PER_TIMING
        if pool is not None:
            both[rows] = (times[0] / rows, times[1] / rows)
        ns = min(times)
        costs.observe(rows, ns)
        if rows > max_batch_size:
            if ns / rows > per_row[rows // 2] * (1 - ROW_COST_TOLERANCE):
                break
            limit = rows
        per_row[rows] = ns / rows
        rows *= 2
    return Sizing(limit, {size: pair for size, pair in both.items() if size <= limit})


def describe(sizing: Sizing, costs: BatchCosts) -> str:
    """For the load's log line: the limit, the cost per row that chose it, and both sessions' where timed."""
    measured = ", ".join(f"{rows}: {ns / rows / 1e3:.2f}" for rows, ns in costs.sizes.items())
    text = f"batches up to {sizing.max_batch_size} rows (us per row by batch size: {measured})"
    if sizing.both:
        pairs = ", ".join(f"{rows}: {one / 1e3:.2f} / {pool / 1e3:.2f}" for rows, (one, pool) in sizing.both.items())
        text += (f"; from {POOL_FROM_ROWS} rows, the faster of one thread and ONNX Runtime's pool, as measured "
                 f"(us per row, one thread / pool: {pairs})")
    return text
