"""Warmup before a version is reported AVAILABLE: the configured runs on zero-filled inputs, then timed runs
at one row and at a larger batch, so that the scheduler and admission start from measured batch costs instead
of learning them from the first callers."""

from __future__ import annotations

import time

import numpy as np
import onnxruntime as ort

from ortserve.errors import ConfigError
from ortserve.repository.config import Warmup
from ortserve.runtime.costs import BatchCosts
from ortserve.runtime.signature import Signature

Tensors = dict[str, np.ndarray]
PROBE_ROWS = 8
PROBE_BUDGET_NS = 1_000_000_000  # skip the larger batch when it would take longer than this


def zero_inputs(signature: Signature, batch_size: int, shapes: dict[str, list[int]], batched: bool) -> Tensors:
    """Inputs for warmup: zeros (empty strings), dynamic dimensions from `shapes` or 1."""
    feeds = {}
    for spec in signature.inputs:
        dims = list(spec.shape)
        if batched:
            dims[0] = batch_size
        override = shapes.get(spec.name)
        if override is not None:
            dims = ([batch_size] if batched else []) + list(override)
        dims = [1 if dim < 0 else dim for dim in dims]
        if spec.type.is_bytes:
            feeds[spec.name] = np.full(dims, "", dtype=object)
        else:
            feeds[spec.name] = np.zeros(dims, dtype=spec.type.numpy)
    return feeds


def _run(model: str, session: ort.InferenceSession, feeds: Tensors) -> int:
    """One timed run, in ns; a failure is the config's (warmup shapes), named as such."""
    started = time.perf_counter_ns()
    try:
        session.run(None, feeds)
    except Exception as exc:
        raise ConfigError(f"model {model!r}: warmup failed (set warmup.shapes?): {exc}") from None
    return time.perf_counter_ns() - started


def prime(model: str, session: ort.InferenceSession, signature: Signature, warmup: Warmup, batched: bool) -> None:
    """The configured warmup runs."""
    for _ in range(warmup.runs):
        _run(model, session, zero_inputs(signature, warmup.batch_size, warmup.shapes, batched))


def warm_up(model: str, session: ort.InferenceSession, signature: Signature, warmup: Warmup,
            max_batch_size: int) -> BatchCosts:
    """The configured warmup runs, then calibration: the batch costs measured (none when warmup is off)."""
    costs = BatchCosts()
    if not warmup.runs:
        return costs
    batched = max_batch_size > 0
    prime(model, session, signature, warmup, batched)
    one_row = zero_inputs(signature, 1, warmup.shapes, batched)
    _run(model, session, one_row)
    single_ns = _run(model, session, one_row)
    costs.observe(1, single_ns)
    probe = min(PROBE_ROWS, max_batch_size)
    if probe > 1 and single_ns * probe <= PROBE_BUDGET_NS:
        feeds = zero_inputs(signature, probe, warmup.shapes, batched)
        _run(model, session, feeds)  # the first run at a new size grows ONNX Runtime's buffers
        costs.observe(probe, _run(model, session, feeds))
    return costs
