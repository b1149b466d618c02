"""Dynamic batching: merge queued requests along the batch dimension, run them once, split the results.

Rows are counted, not requests. A batch holds only requests whose non-batch dimensions agree. A batch is
sent as soon as the worker is free and one of these holds: the queue holds `max_batch_size` rows, it holds a
preferred batch size, or its oldest request has waited `max_queue_delay_us`. While a batch runs, new requests
queue up, so under load batches grow by themselves even with no delay.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import numpy as np

from ortserve.runtime.stats import VersionStats
from ortserve.runtime.worker import Worker

Tensors = dict[str, np.ndarray]
Execute = Callable[[Tensors], Tensors]


@dataclass(slots=True)
class _Pending:
    inputs: Tensors
    rows: int
    key: Hashable  # requests merge only when their keys (non-batch shapes) are equal
    future: asyncio.Future[Tensors]
    enqueued_ns: int


@dataclass(slots=True)
class _Outcome:
    merged: Tensors | None  # outputs of the merged batch, or None when it failed
    each: list[Tensors | BaseException]  # per-request results when the merged run failed
    input_ns: int
    compute_ns: int


class Batcher:
    def __init__(self, execute: Execute, worker: Worker, stats: VersionStats, *, max_batch_size: int,
                 max_queue_delay_us: int, preferred_batch_sizes: list[int]) -> None:
        self._execute = execute
        self._worker = worker
        self._stats = stats
        self._max_rows = max_batch_size  # 0: the model has no batch dimension; one request per run
        self._delay_ns = max_queue_delay_us * 1000
        self._preferred = sorted(set(preferred_batch_sizes))
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._busy = False
        self._timer: asyncio.TimerHandle | None = None
        self._soon: asyncio.Handle | None = None
        self._closing = False
        self._loop = asyncio.get_running_loop()

    def submit(self, inputs: Tensors, rows: int, key: Hashable) -> asyncio.Future[Tensors]:
        future: asyncio.Future[Tensors] = self._loop.create_future()
        self._queue.append(_Pending(inputs, rows, key, future, time.perf_counter_ns()))
        self._queued_rows += rows
        if not self._busy:
            self._schedule()
        return future

    def close(self) -> None:
        """Stop taking work: what is queued or running still completes, then the worker thread ends."""
        self._closing = True
        if not self._busy and not self._queue:
            self._worker.close()

    def _ready(self) -> bool:
        if self._max_rows == 0 or self._delay_ns == 0 or self._queued_rows >= self._max_rows:
            return True
        if self._preferred and self._queued_rows >= self._preferred[0]:
            return True
        return time.perf_counter_ns() - self._queue[0].enqueued_ns >= self._delay_ns

    def _schedule(self) -> None:
        """Dispatch on the next loop turn (so requests read in this turn join) or when the delay runs out."""
        if not self._queue or self._busy or self._soon is not None:
            return
        if self._ready():
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._soon = self._loop.call_soon(self._dispatch)
        elif self._timer is None:
            waited_ns = time.perf_counter_ns() - self._queue[0].enqueued_ns
            self._timer = self._loop.call_later(max(self._delay_ns - waited_ns, 0) / 1e9, self._dispatch)

    def _row_target(self) -> int:
        """How many rows to take now: a preferred size when one is reached, else as many as fit."""
        if self._max_rows == 0:
            return 0
        reached = [size for size in self._preferred if size <= self._queued_rows]
        return reached[-1] if reached else self._max_rows

    def _take_batch(self) -> list[_Pending]:
        """Oldest request first, then later ones with the same key while the rows fit; keep the order."""
        first = self._queue.popleft()
        batch, rows, target = [first], first.rows, self._row_target()
        if target > rows:
            kept: deque[_Pending] = deque()
            while self._queue and rows < target:
                item = self._queue.popleft()
                if item.key == first.key and rows + item.rows <= target:
                    batch.append(item)
                    rows += item.rows
                else:
                    kept.append(item)
            kept.extend(self._queue)
            self._queue = kept
        self._queued_rows -= rows
        return batch

    def _dispatch(self) -> None:
        self._soon = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._busy or not self._queue:
            return
        batch = self._take_batch()
        now = time.perf_counter_ns()
        for item in batch:
            self._stats.queued(now - item.enqueued_ns)
        self._busy = True
        self._worker.submit(self._loop, lambda: self._run(batch), lambda outcome: self._complete(batch, outcome))

    def _run(self, batch: list[_Pending]) -> _Outcome:
        """On the worker thread: run the merged batch; if it fails, run each request alone."""
        start = time.perf_counter_ns()
        if len(batch) == 1:
            merged = batch[0].inputs
        else:
            merged = {name: np.concatenate([item.inputs[name] for item in batch]) for name in batch[0].inputs}
        merged_at = time.perf_counter_ns()
        try:
            return _Outcome(self._execute(merged), [], merged_at - start, time.perf_counter_ns() - merged_at)
        except Exception as exc:
            if len(batch) == 1:
                return _Outcome(None, [exc], merged_at - start, time.perf_counter_ns() - merged_at)
        each: list[Tensors | BaseException] = []
        for item in batch:
            try:
                each.append(self._execute(item.inputs))
            except Exception as exc:
                each.append(exc)
        return _Outcome(None, each, merged_at - start, time.perf_counter_ns() - merged_at)

    def _complete(self, batch: list[_Pending], outcome: _Outcome) -> None:
        self._busy = False
        split_start = time.perf_counter_ns()
        if outcome.merged is not None:
            start = 0
            for item in batch:
                stop = start + item.rows
                if not item.future.done():
                    if len(batch) == 1:
                        item.future.set_result(outcome.merged)
                    else:
                        item.future.set_result({name: out[start:stop] for name, out in outcome.merged.items()})
                start = stop
        else:
            for item, result in zip(batch, outcome.each, strict=True):
                if item.future.done():
                    continue
                if isinstance(result, BaseException):
                    item.future.set_exception(result)
                else:
                    item.future.set_result(result)
        rows = sum(item.rows for item in batch) or 1
        self._stats.batch_done(rows, outcome.input_ns, outcome.compute_ns, time.perf_counter_ns() - split_start)
        if self._closing and not self._queue:
            self._worker.close()
        else:
            self._schedule()
