"""Dynamic batching: merge queued requests along the batch dimension, run them once, split the results.

Rows are counted, not requests. A batch holds only requests whose non-batch dimensions agree. Each batcher owns
one worker thread, which takes a batch as soon as it is free and one of these holds: the queue holds
`max_batch_size` rows, it holds a preferred batch size, it holds as many rows as are worth waiting for, or its
oldest request has waited `max_queue_delay_us` (counted from when the model was free to run it, not from its
arrival). While a batch runs, new requests queue up, so under load batches grow by themselves even with no delay.

Worth waiting for are the rows queued when the last batch ended plus the rows that batch answered: callers in a
closed loop send their next request once answered. Counting the delay from its arrival, a request that queued
behind a long batch would run at once with whatever had come, and a model under N steady callers falls into
batches of uneven sizes (ResNet50 with eight callers: every size from 1 to 8, the small ones at the worst cost
per row; benchmarks/queue_delay.py). Counting it from the model's free time, the answered callers have the delay
to come back, and batches stay full. A lone caller is not delayed (after its first request): it is all the
company there is.

Requests come from any thread (the event loop for REST, the gRPC thread) and their answers are handed to a
callback on the thread that ran the batch: no event loop sits between a gRPC request and its batch.

Handing a request to the worker thread costs a thread wake-up and a GIL hand-over, about 100 us on a small VM:
more than a small model's whole run. So a caller may offer to run the queue itself (`run_later`, the gRPC
thread does): when the batcher is idle, no queue delay is configured, and recent batches ran in under
`RUN_HERE_BELOW_NS`, the request is queued without waking the worker, and the caller calls `run_here()` once it
has read the requests already waiting, which then batch together on its thread. A request from anywhere else
wakes the worker, which takes whatever is queued, claimed or not.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import numpy as np

from ortserve.errors import Unavailable
from ortserve.runtime.stats import VersionStats

log = logging.getLogger(__name__)

Tensors = dict[str, np.ndarray]
Execute = Callable[[Tensors], Tensors]
Done = Callable[[Tensors | BaseException], None]  # called once, with outputs or the error
RUN_HERE_BELOW_NS = 1_000_000
_SMOOTHING = 0.2  # weight of the newest batch in the running estimate of a batch's run time


@dataclass(slots=True)
class _Pending:
    inputs: Tensors
    rows: int
    key: Hashable  # requests merge only when their keys (non-batch shapes) are equal
    done: Done
    started_ns: int  # when the request reached the core, for its end-to-end latency
    enqueued_ns: int


class Batcher:
    def __init__(self, execute: Execute, stats: VersionStats, *, name: str, max_batch_size: int,
                 max_queue_delay_us: int, preferred_batch_sizes: list[int]) -> None:
        self._execute = execute
        self._stats = stats
        self._max_rows = max_batch_size  # 0: the model has no batch dimension; one request per run
        self._delay_ns = max_queue_delay_us * 1000
        self._preferred = sorted(set(preferred_batch_sizes))
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._closing = False
        self._busy = False  # a batch is running, on the worker or on a caller's thread
        self._claimed = False  # what is queued waits for a caller's run_here(), not for the worker
        self._run_ns = float(RUN_HERE_BELOW_NS)  # running estimate; starts undecided, so the worker runs first
        self._free_since_ns = 0  # when the last batch ended
        self._expected_rows = max_batch_size  # rows worth waiting for: see _wait_ns
        self._wakeup = threading.Condition(threading.Lock())
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def submit(self, inputs: Tensors, rows: int, key: Hashable, done: Done, started_ns: int, *,
               run_later: Callable[[Callable[[], None]], None] | None = None) -> None:
        """Queue a request (from any thread); `done` receives its outputs or its error. A caller that passes
        `run_later` may be handed `run_here`, which it must then call soon (see the module's docstring)."""
        item = _Pending(inputs, rows, key, done, started_ns, time.perf_counter_ns())
        with self._wakeup:
            if self._closing:
                raise Unavailable("the model version is being unloaded")
            self._stats.started()
            claim = (run_later is not None and not self._busy and (self._claimed or not self._queue)
                     and self._delay_ns == 0 and self._run_ns < RUN_HERE_BELOW_NS)
            self._queue.append(item)
            self._queued_rows += rows
            if not claim:
                self._claimed = False
                self._wakeup.notify()
            elif not self._claimed:
                self._claimed = True
                run_later(self.run_here)

    def run_here(self) -> None:
        """Run the queued requests on this thread, unless the worker has taken them; leave any rest to it."""
        with self._wakeup:
            if self._busy or not self._queue:
                return
            batch = self._start_batch()
        self._answer(batch)

    def close(self) -> None:
        """Stop taking work: what is queued or running still completes, then the worker thread ends."""
        with self._wakeup:
            self._closing = True
            self._wakeup.notify()

    def join(self, timeout_s: float | None = None) -> bool:
        """Wait for the worker thread to end after close(); whether it has."""
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _wait_ns(self) -> int:
        """How long the queued requests may still wait for company; 0 when a batch should go now."""
        if self._max_rows == 0 or self._delay_ns == 0 or self._closing or self._queued_rows >= self._max_rows:
            return 0
        if self._preferred and self._queued_rows >= self._preferred[0]:
            return 0
        if self._queued_rows >= self._expected_rows:
            return 0
        waiting_since = max(self._queue[0].enqueued_ns, self._free_since_ns)
        return self._delay_ns - (time.perf_counter_ns() - waiting_since)

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

    def _next_batch(self) -> list[_Pending] | None:
        """Block until a batch should run (and mark the batcher busy); None once closed and drained."""
        with self._wakeup:
            while True:
                if not self._queue or self._busy:
                    if self._closing and not self._queue:
                        return None
                    self._wakeup.wait()
                    continue
                wait_ns = self._wait_ns()
                if wait_ns <= 0:
                    return self._start_batch()
                self._wakeup.wait(wait_ns / 1e9)

    def _start_batch(self) -> list[_Pending]:
        """Under the lock: take a batch and mark the batcher busy."""
        self._busy = True
        self._claimed = False
        return self._take_batch()

    def _serve(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._answer(batch)

    def _answer(self, batch: list[_Pending]) -> None:
        now = time.perf_counter_ns()
        for item in batch:
            self._stats.queued(now - item.enqueued_ns)
        self._run(batch)

    def _run(self, batch: list[_Pending]) -> None:
        """Run the merged batch and answer each request; if the batch fails, run each request alone."""
        start = time.perf_counter_ns()
        if len(batch) == 1:
            merged = batch[0].inputs
        else:
            merged = {name: np.concatenate([item.inputs[name] for item in batch]) for name in batch[0].inputs}
        merged_at = time.perf_counter_ns()
        failure: Exception | None = None
        try:
            outputs = self._execute(merged)
        except Exception as exc:
            failure = exc
        computed_at = time.perf_counter_ns()
        results: list[Tensors | BaseException]
        if failure is None:
            results = [outputs] if len(batch) == 1 else _split(outputs, batch)
        else:
            results = [failure] if len(batch) == 1 else [self._run_alone(item) for item in batch]
        rows = sum(item.rows for item in batch) or 1
        self._stats.batch_done(rows, merged_at - start, computed_at - merged_at, time.perf_counter_ns() - computed_at)
        with self._wakeup:
            self._busy = False
            self._free_since_ns = time.perf_counter_ns()
            self._expected_rows = self._queued_rows + rows
            self._run_ns += _SMOOTHING * (computed_at - start - self._run_ns)
            if self._queue:  # left over, or queued while this batch ran: the worker takes them
                self._claimed = False
                self._wakeup.notify()
        for item, result in zip(batch, results, strict=True):
            self._stats.request_done(time.perf_counter_ns() - item.started_ns, not isinstance(result, BaseException),
                                     was_queued=True)
            try:
                item.done(result)
            except Exception:  # a front end's answer failed; the others still get theirs
                log.exception("answering a request failed")

    def _run_alone(self, item: _Pending) -> Tensors | BaseException:
        try:
            return self._execute(item.inputs)
        except Exception as exc:
            return exc


def _split(outputs: Tensors, batch: list[_Pending]) -> list[Tensors]:
    """Each request's rows of the merged outputs, as views."""
    parts, start = [], 0
    for item in batch:
        stop = start + item.rows
        parts.append({name: out[start:stop] for name, out in outputs.items()})
        start = stop
    return parts
