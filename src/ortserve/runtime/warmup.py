"""Warmup before a version is reported AVAILABLE: the configured runs on zero-filled inputs (or the model's own
samples: runtime.samples), then timed runs
at one row and at a larger batch, so that the scheduler and admission start from measured batch costs instead
of learning them from the first callers.

For a small model it also settles the intra-op threads when config.yaml leaves them unset: ONNX Runtime's
default pool (a thread per core) hands every operator to threads that sleep between runs, which can cost more
than the work itself. A one-thread session is timed beside the default one and kept when it is faster at one row
and no more than ONE_THREAD_MARGIN slower at the larger batch (one_thread_wins; measured on 2 cores: an MLP
784-256-10 runs one row in 18 us on one thread and 39 us on two; EfficientNet-Lite0 and ResNet50 are twice as
fast on two). That choice is timed longer, in two passes a session keeps the cheaper of: timed like the batch
costs (three turns, one pass), a slow spell on a shared machine chose the pool for the MLP in two loads of six
(one thread at 8 rows: 32 us, 58 in the spell), and a one-row predict() then cost 27 us more than a bare run
instead of 12.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import onnxruntime as ort

from ortserve.errors import ConfigError
from ortserve.repository.config import Warmup
from ortserve.runtime.costs import BatchCosts
from ortserve.runtime.run_errors import RUN_ERRORS
from ortserve.runtime.samples import sample_batch
from ortserve.runtime.signature import DYNAMIC, Signature
from ortserve.shapes import IMAGE_SIDE, image_axes

log = logging.getLogger(__name__)

Tensors = dict[str, np.ndarray]
PROBE_ROWS = 8
PROBE_BUDGET_NS = 1_000_000_000  # skip the larger batch when it would take longer than this
TIMED_RUNS_BELOW_NS = 20_000_000  # runs faster than this are timed TURNS * TURN_RUNS times (median), slower ones once
TURNS, TURN_RUNS = 3, 2
# choosing between sessions: turns as many as fit the budget (at most CHOICE_MOST_TURNS), in CHOICE_PASSES passes
CHOICE_BUDGET_NS, CHOICE_MOST_TURNS, CHOICE_PASSES = 20_000_000, 30, 2
FEW_THREADS_BELOW_NS = 2_000_000  # models whose one-row run is faster may be better off on one thread
ONE_THREAD_MARGIN = 0.25  # one thread is kept while no more than this much slower than the pool past one row
GUESSED_SIZES = (16, 128, 1024)  # for dynamic dimensions a model refuses at 1


def zero_inputs(signature: Signature, batch_size: int, shapes: dict[str, list[int]], batched: bool) -> Tensors:
    """Inputs for warmup: zeros (empty strings), dynamic dimensions from `shapes`, else an image's height and width
    IMAGE_SIDE and others 1."""
    feeds = {}
    for spec in signature.inputs:
        dims = list(spec.shape)
        if batched:
            dims[0] = batch_size
        override = shapes.get(spec.name)
        if override is not None:
            dims = ([batch_size] if batched else []) + list(override)
        spatial = image_axes(dims) if spec.type.numpy.kind in "fu" else ()
        dims = [(IMAGE_SIDE if axis in spatial else 1) if dim < 0 else dim for axis, dim in enumerate(dims)]
        if spec.type.is_bytes:
            feeds[spec.name] = np.full(dims, "", dtype=object)
        else:
            feeds[spec.name] = np.zeros(dims, dtype=spec.type.numpy)
    return feeds


def warmup_inputs(signature: Signature, rows: int, shapes: dict[str, list[int]], batched: bool,
                  samples: Tensors | None) -> Tensors:
    """The model's own samples (runtime.samples) when it has them, else zeros."""
    if samples is not None:
        return sample_batch(samples, rows, batched)
    return zero_inputs(signature, rows, shapes, batched)


def _run(model: str, session: ort.InferenceSession, feeds: Tensors) -> int:
    """One timed run, in ns; a failure is the config's (warmup shapes), named as such."""
    started = time.perf_counter_ns()
    try:
        session.run(None, feeds)
    except RUN_ERRORS as exc:
        raise ConfigError(f"model {model!r}: warmup failed (set warmup.shapes?): {exc}") from None
    return time.perf_counter_ns() - started


def settle_warmup(model: str, session: ort.InferenceSession, signature: Signature, warmup: Warmup,
                  batched: bool, samples: Tensors | None = None) -> Warmup:
    """The warmup to run: config.yaml's when its inputs run. The model's own samples must run. Else a dynamic
    dimension config.yaml leaves unsized is guessed (1, an image's side): a model that refuses that (a
    convolution over a time axis needs several samples) is tried with each of GUESSED_SIZES in turn, and when
    none runs it is served without warmup (its batch costs then learned from its first requests) rather than not
    at all, as is a model that refuses zeros whatever their shape (an input that is itself a shape, such as
    Expand's). Shapes config.yaml gives must run."""
    if not warmup.runs:
        return warmup
    if samples is not None:
        refused = _refusal(session, sample_batch(samples, 1, batched))
        if refused is not None:
            raise ConfigError(f"model {model!r}: warmup failed on the model's warmup data: {refused}")
        return warmup
    failure = _refusal(session, zero_inputs(signature, 1, warmup.shapes, batched))
    if failure is None:
        return warmup
    unsized = [spec.name for spec in signature.inputs if spec.name not in warmup.shapes
               and any(dim == DYNAMIC for dim in spec.shape[1 if batched else 0:])]
    if not unsized:
        if warmup.shapes:
            raise ConfigError(f"model {model!r}: warmup failed (set warmup.shapes?): {failure}")
        # sizes are not the cause: values are (zeros as a shape for Expand or Reshape, as a divisor, ...)
        log.warning("model %r: served without warmup: it refused zero-filled inputs (%s); its batch costs are "
                    "learned from its first requests", model, failure)
        return warmup.model_copy(update={"runs": 0})
    for size in GUESSED_SIZES:
        shapes = {**warmup.shapes, **{name: _sized(signature, name, size, batched) for name in unsized}}
        if _refusal(session, zero_inputs(signature, 1, shapes, batched)) is None:
            log.info("model %r: warmup runs inputs of shapes %s (dynamic dimensions of 1 were refused: %s)", model,
                     shapes, failure)
            return warmup.model_copy(update={"shapes": shapes})
    log.warning("model %r: served without warmup: it refused inputs with its dynamic dimensions of 1 (%s) and of "
                "each of %s; set warmup.shapes in config.yaml to warm it up and measure its batch costs at load",
                model, failure, list(GUESSED_SIZES))
    return warmup.model_copy(update={"runs": 0})


def unbatched_shapes(signature: Signature, shapes: dict[str, list[int]]) -> dict[str, list[int]]:
    """Warmup shapes written for a batched model (all but the first dimension) for the model served unbatched,
    where they give every dimension: the first, which was the batch's, of size 1."""
    ranks = {spec.name: spec.rank for spec in signature.inputs}
    return {name: [1, *dims] if len(dims) == ranks.get(name, 0) - 1 else dims for name, dims in shapes.items()}


def _sized(signature: Signature, name: str, size: int, batched: bool) -> list[int]:
    """An input's dimensions past the batch (all when unbatched), its dynamic ones `size` (an image's side
    IMAGE_SIDE)."""
    spec = signature.input(name)
    assert spec is not None
    spatial = image_axes(spec.shape) if spec.type.numpy.kind in "fu" else ()
    dims = [(IMAGE_SIDE if axis in spatial else size) if dim == DYNAMIC else dim for axis, dim in enumerate(spec.shape)]
    return dims[1:] if batched else dims


def _refusal(session: ort.InferenceSession, feeds: Tensors) -> str | None:
    try:
        session.run(None, feeds)
    except RUN_ERRORS as exc:
        return str(exc)
    return None


def prime(model: str, session: ort.InferenceSession, signature: Signature, warmup: Warmup, batched: bool,
          samples: Tensors | None = None) -> None:
    """The configured warmup runs."""
    for _ in range(warmup.runs):
        _run(model, session, warmup_inputs(signature, warmup.batch_size, warmup.shapes, batched, samples))


def warm_up(model: str, session: ort.InferenceSession, signature: Signature, warmup: Warmup,
            max_batch_size: int, samples: Tensors | None = None) -> BatchCosts:
    """The configured warmup runs, then calibration: the batch costs measured (none when warmup is off)."""
    costs = BatchCosts()
    if not warmup.runs:
        return costs
    batched = max_batch_size > 0
    prime(model, session, signature, warmup, batched, samples)
    return calibrate(model, [session], signature, warmup.shapes, max_batch_size, samples)[0]


def timed(model: str, sessions: list[ort.InferenceSession], feeds: Tensors, budget_ns: int = 0) -> list[int]:
    """The median run time in ns of each session, after one untimed run (the first at a size grows ONNX Runtime's
    buffers). Several sessions take turns of TURN_RUNS timed runs, so that a change in the machine's speed (a
    shared machine's moves by 2x within seconds) falls on all of them alike; each turn starts with an untimed run,
    which pays for the session before it (measured on 2 cores: ONNX Runtime's pool ran 512-row MLP batches at
    4.0 us a row when the sessions alternated run by run, 2.4 in turns). A fast model takes TURNS turns, or as
    many more as fit `budget_ns` (up to CHOICE_MOST_TURNS)."""
    first = max(_run(model, session, feeds) for session in sessions)
    fast = first < TIMED_RUNS_BELOW_NS
    turns, per_turn = (TURNS, TURN_RUNS) if fast else (1, 1)
    if fast and budget_ns:
        affordable = budget_ns // max(first * len(sessions) * (per_turn + 1), 1)
        turns = int(min(max(turns, affordable), CHOICE_MOST_TURNS))
    times: list[list[int]] = [[] for _ in sessions]
    for _ in range(turns):
        for index, session in enumerate(sessions):
            if fast and len(sessions) > 1:
                _run(model, session, feeds)
            times[index].extend(_run(model, session, feeds) for _ in range(per_turn))
    return [sorted(each)[len(each) // 2] for each in times]


def runs_per_timing(sessions: int) -> int:
    """How many runs timed() makes of each of `sessions` sessions, for a fast model (for time budgets)."""
    return 1 + TURNS * (TURN_RUNS + (1 if sessions > 1 else 0))


def calibrate(model: str, sessions: list[ort.InferenceSession], signature: Signature, shapes: dict[str, list[int]],
              max_batch_size: int, samples: Tensors | None = None) -> list[BatchCosts]:
    """Batch costs of each session at one row and, when it fits the time budget, at PROBE_ROWS. Several sessions
    (a choice between them) are timed over more turns, in CHOICE_PASSES passes over both sizes, each session
    keeping its cheaper figure of a size."""
    batched = max_batch_size > 0
    choosing = len(sessions) > 1
    budget = CHOICE_BUDGET_NS if choosing else 0
    best: dict[int, list[int]] = {}
    for _ in range(CHOICE_PASSES if choosing else 1):
        singles = timed(model, sessions, warmup_inputs(signature, 1, shapes, batched, samples), budget)
        best[1] = [min(pair) for pair in zip(best.get(1, singles), singles, strict=True)]
        probe = min(PROBE_ROWS, max_batch_size)
        if probe > 1 and max(singles) * probe <= PROBE_BUDGET_NS:
            probes = timed(model, sessions, warmup_inputs(signature, probe, shapes, batched, samples), budget)
            best[probe] = [min(pair) for pair in zip(best.get(probe, probes), probes, strict=True)]
    costs = [BatchCosts() for _ in sessions]
    for rows, times in best.items():
        for each, ns in zip(costs, times, strict=True):
            each.observe(rows, ns)
    return costs


def one_thread_wins(costs: BatchCosts, one_thread: BatchCosts) -> bool:
    """Whether the one-thread session ran faster than `costs` (the pool's) at one row, and at every other size
    measured no more than ONE_THREAD_MARGIN slower. The pool takes every core for its speed-up, which is its best
    case (timed while the other cores were free): a small one is a poor trade for the cores the front end and the
    other models need. The MLP on 2 cores, cheaper of two passes, over twenty loads: one row 16-35 us on one thread
    against 19-45 on the pool, one thread faster in every load; 8 rows 31.5-51 against 29.5-54, the pool up to 11 %
    faster in quiet loads. Larger batches may still run on the pool (runtime.threads)."""
    sizes = costs.sizes
    single = one_thread.sizes
    return (single.get(1, float("inf")) < sizes.get(1, 0.0)
            and all(single.get(rows, float("inf")) <= ns * (1 + ONE_THREAD_MARGIN) for rows, ns in sizes.items()))
