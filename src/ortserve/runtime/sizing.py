"""Batch sizing at warmup, for what config.yaml leaves unset: how many rows a batch (and a request) may hold,
and, for a small model kept on one intra-op thread, from how many rows ONNX Runtime's default thread pool runs
a batch faster than that one thread does.

Both are measured, not assumed. Batches from the default limit (32 rows; 16 when a pool session is kept beside
a one-thread one) up, doubling, are timed on the version's session and on the pool's, taking turns run by
run (runtime.warmup.timed). The pool runs every batch from the first size it wins at. An unconfigured limit
doubles while doubling cuts the cost per row by more than the scheduler's ROW_COST_TOLERANCE, up to
LARGEST_DEFAULT_ROWS, within SIZING_BUDGET_NS of timing. Measured on 2 cores, MLP 784-256-10: one thread runs
190k rows/s at 8 rows but flattens at 260k from 32 rows; the pool of two runs 140k at 8, 390k at 32, 450k at
128 and 490k at 512 (and this shared machine's speed moves by 2x within a minute, so the sizes chosen vary
from load to load). So small batches (a few concurrent callers) stay on one thread and large ones (bulk calls,
many callers) use both cores. ResNet50's cost per row is flat from a few rows, and a batch of 32 takes over a
second: its probe is skipped for its cost and its limit stays at the default.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import onnxruntime as ort

from ortserve.runtime.costs import BatchCosts
from ortserve.runtime.scheduler import ROW_COST_TOLERANCE
from ortserve.runtime.signature import Signature
from ortserve.runtime.warmup import PROBE_ROWS, timed, zero_inputs

log = logging.getLogger(__name__)

LARGEST_DEFAULT_ROWS = 512
SIZING_BUDGET_NS = 1_000_000_000
_RUNS_PER_TIMING = 6  # warmup.timed: one untimed run, then the median of five


@dataclass(frozen=True)
class Sizing:
    max_batch_size: int
    wide_from_rows: int  # batches of this many rows or more run on the default-pool session; 0: none do


def size_batches(model: str, narrow: ort.InferenceSession, wide: ort.InferenceSession | None, signature: Signature,
                 shapes: dict[str, list[int]], max_batch_size: int, *, grow: bool, costs: BatchCosts) -> Sizing:
    """Time larger batches on `narrow` (the version's session) and on `wide` (the default thread pool's, kept
    beside a one-thread narrow session) until the wide one wins, observing what runs each size into `costs`.
    `grow`: the limit was not configured and may double past `max_batch_size` while that pays."""
    if not costs.measured or (wide is None and not grow):
        return Sizing(max_batch_size, 0)
    spent, wide_from, limit = 0.0, 0, max_batch_size
    per_row: dict[int, float] = {}
    rows = min(2 * PROBE_ROWS, max_batch_size) if wide is not None else max_batch_size
    while rows <= (LARGEST_DEFAULT_ROWS if grow else max_batch_size):
        sessions = [wide] if wide_from else [narrow] if wide is None else [narrow, wide]
        if spent + costs.cost_ns(rows) * _RUNS_PER_TIMING * len(sessions) > SIZING_BUDGET_NS:
            break
        feeds = zero_inputs(signature, rows, shapes, True)
        times = timed(model, sessions, feeds)
        spent += sum(times) * _RUNS_PER_TIMING
        if len(times) == 2 and times[1] < times[0]:
            wide_from = rows
        ns = times[-1] if wide_from else times[0]
        costs.observe(rows, ns)
        if rows > max_batch_size:
            if ns / rows > per_row[rows // 2] * (1 - ROW_COST_TOLERANCE):
                break
            limit = rows
        per_row[rows] = ns / rows
        rows *= 2
    return Sizing(limit, wide_from if wide_from <= limit else 0)


def describe(sizing: Sizing, costs: BatchCosts) -> str:
    """For the load's log line: the limit, the cost per row that chose it, and the session by batch size."""
    measured = ", ".join(f"{rows}: {ns / rows / 1e3:.2f}" for rows, ns in costs.sizes.items())
    threads = (f"; batches of {sizing.wide_from_rows}+ rows on ONNX Runtime's default thread pool"
               if sizing.wide_from_rows else "")
    return f"batches up to {sizing.max_batch_size} rows (us per row by batch size: {measured}){threads}"

