"""Dynamic batching: merge queued requests along the batch dimension, run them once, split the results.

Rows are counted, not requests. A batch holds only requests whose non-batch dimensions agree. The version's
instances (each an ONNX Runtime session, with a worker thread of its own) take batches as they come free; how
many rows a batch takes and how long it may wait for more are the scheduler's choice (runtime.scheduler),
from the batch costs and refill times measured here. While a batch runs, new requests queue up, so under
load batches grow by themselves.

Admission (runtime.admission) happens in `submit`, under the same lock as the queue: a request that the
queue's bound, its deadline or the latency objective cannot take is refused there, before it holds a slot.
A queued request whose deadline will pass before its batch would be answered is dropped when batches are taken
(DeadlineExceeded), and one whose caller has gone is removed at once by the callable `submit` returns:
nothing is computed for a caller who cannot use the answer.

Requests come from any thread (the event loop for REST, the gRPC thread) and their answers are handed to a
callback on the thread that ran the batch: no event loop sits between a gRPC request and its batch.

Handing a request to a worker thread costs a thread wake-up and a GIL hand-over, about 100 us on a small VM:
more than a small model's whole run. So a caller may offer to run the queue itself (`run_later`, the gRPC
thread does): when an instance is free, nothing else is queued, and the scheduler finds the model fast, the
request is queued without waking a worker, and the caller calls `run_here()` once it has read the requests
already waiting, which then batch together on its thread. A request from anywhere else wakes the workers,
which take whatever is queued, claimed or not.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ortserve.errors import Cancelled, DeadlineExceeded, Overloaded, ShuttingDown
from ortserve.runtime import staging
from ortserve.runtime.admission import Admission
from ortserve.runtime.scheduler import Choices, Scheduler
from ortserve.runtime.stats import VersionStats

log = logging.getLogger(__name__)

Tensors = dict[str, np.ndarray]
Execute = Callable[[Tensors], Tensors]
Done = Callable[[Tensors | BaseException], None]  # called once, with outputs or the error
RunLater = Callable[[Callable[[], None]], None]
Cancel = Callable[[], None]


@dataclass(slots=True)
class Assembled:
    """A batch made from requests that cannot simply be stacked: the model's inputs for each of its session runs,
    each request's refusal (None: it is in the batch), and how the runs' outputs become the answers of the
    requests in it, in order."""

    feeds: list[Tensors]  # empty when every request was refused
    errors: list[Exception | None]
    answers: Callable[[list[Tensors]], list[Tensors]]


class Assembly(Protocol):
    """Requests that carry something else than the model's tensors (texts: runtime.text) and become a batch only
    when it is taken; their answers are made from the batch's outputs."""

    def assemble(self, requests: list[Tensors]) -> Assembled: ...


@dataclass(slots=True, eq=False)
class _Pending:
    inputs: Tensors
    rows: int
    key: Hashable  # requests merge only when their keys (non-batch shapes, or their assembly) are equal
    done: Done
    started_ns: int  # when the request reached the core, for its end-to-end latency
    enqueued_ns: int
    deadline_ns: int  # perf_counter_ns; 0: none
    predicted_ns: int  # admission's prediction of its time to answer, checked against the real one
    assembly: Assembly | None = None  # None: its inputs are the model's, stacked with the others'
    queued: bool = True  # until a batch takes it, or it is dropped or cancelled


@dataclass(slots=True, eq=False)
class _Instance:
    execute: Execute
    busy: bool = False
    retired: bool = False  # replaced (instance scaling): its worker ends after its batch
    expected_end_ns: int = 0  # when its running batch should end, for admission's prediction
    busy_ns: int = 0  # time spent running batches, for the instance scaler


@dataclass(frozen=True)
class QueueState:
    """A reading of the batcher, for metrics and the instance scaler."""

    queued_requests: int
    queued_rows: int
    instances: int
    busy_instances: int
    busy_ns: int  # all instances' batch time so far
    queue_bound: int | None
    admission_correction: float  # measured time to answer / predicted (runtime.admission)


class Batcher:
    def __init__(self, instances: list[Execute], stats: VersionStats, *, name: str, scheduler: Scheduler,
                 admission: Admission) -> None:
        self._stats = stats
        self._name = name
        self._scheduler = scheduler
        self._admission = admission
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._instances: list[_Instance] = []
        self._threads: list[threading.Thread] = []
        self._retired_busy_ns = 0
        self._closing = False
        self._claimed = False  # what is queued waits for a caller's run_here(), not for a worker
        self._free_since_ns = 0  # when the last batch ended
        # Rows worth waiting for: those queued when the last batch ended plus those it answered. A configured
        # delay makes the first request wait for company too, as Triton does.
        self._expected_rows = 0 if scheduler.adaptive_delay else scheduler.policy.max_batch_size
        self._arrived_rows = 0  # rows that arrived since the last batch ended
        self._refill_rows = 0  # rows that batch answered, until as many have arrived (then 0)
        self._backlogged = False  # rows were queued when the last batch ended
        self._warned_rowless = False  # a merged batch's outputs had no row per input row
        self._lock = threading.Condition(threading.Lock())
        self.set_instances(instances)

    def set_instances(self, executes: list[Execute]) -> None:
        """Serve with these instances from now on; the current ones finish their batches, then stop."""
        added = [_Instance(execute) for execute in executes]
        with self._lock:
            if self._closing:
                return
            for instance in self._instances:
                instance.retired = True
                self._retired_busy_ns += instance.busy_ns  # and its running batch's time, when it ends
            self._instances = added
            self._scheduler.use_instances(len(added))
            self._threads = [thread for thread in self._threads if thread.is_alive()]
            for index, instance in enumerate(added):
                thread = threading.Thread(target=self._serve, args=(instance,), name=f"{self._name}-{index}",
                                          daemon=True)
                self._threads.append(thread)
                thread.start()
            self._lock.notify_all()

    def submit(self, inputs: Tensors, rows: int, key: Hashable, done: Done, started_ns: int, *,
               deadline_ns: int = 0, run_later: RunLater | None = None,
               assembly: Assembly | None = None) -> Cancel | None:
        """Admit and queue a request (from any thread); `done` receives its outputs or its error. Raises
        Overloaded or ShuttingDown when it is refused. A caller that passes `run_later` may be handed
        `run_here`, which it must then call soon (see the module's docstring). Returns a callable that
        withdraws the request if it is still queued (its caller has gone), or None when the request runs at once
        on the caller's thread, with nothing to withdraw it from. Requests with an `assembly` (and that as their
        `key`) become a batch through it."""
        now = time.perf_counter_ns()
        with self._lock:
            if self._closing:
                raise ShuttingDown("the model version is stopping and takes no new requests")
            predicted = self._admit(now, rows, deadline_ns, started_ns)
            item = _Pending(inputs, rows, key, done, started_ns, now, deadline_ns, predicted, assembly)
            self._stats.started()
            self._arrived(now, rows)
            # an assembled batch (texts: tokenizing) is never run on the caller's thread, an event loop's
            claim = (run_later is not None and assembly is None and self._scheduler.fast
                     and (self._claimed or not self._queue) and self._free_instance() is not None)
            self._queue.append(item)
            self._queued_rows += rows
            if not claim:
                self._claimed = False
                self._lock.notify_all()
                return functools.partial(self._cancel, item)
            if not self._claimed:
                self._claimed = True
                run_later(self.run_here)
        return None

    def run_now(self, inputs: Tensors, rows: int, started_ns: int, assembly: Assembly | None = None, *,
                bulk: bool = False) -> Tensors | None:
        """The lean path, for a caller that waits on its own thread anyway (the engine): when the version is idle
        (nothing queued, no batch running) and either fast or given a full batch (nothing to wait for), run the
        request here and now as a batch of its own, with none of the queue's bookkeeping and no hand-over to a
        worker. `bulk`: a slice of a caller's many rows, whose own rows are all it would wait for: taken partial
        too. None: not taken; submit it instead. An idle version admits any request without a deadline, so
        admission has nothing to say here."""
        with self._lock:
            instances = self._instances
            instance = instances[0]
            scheduler = self._scheduler
            if (self._closing or self._queue or instance.busy
                    or not (bulk or scheduler.fast or rows >= scheduler.row_limit)
                    or (len(instances) > 1 and any(other.busy for other in instances))):
                return None
            start = time.perf_counter_ns()
            self._arrived(start, rows)
            self._starting(waited=False)
            instance.busy = True
            instance.expected_end_ns = start + int(self._scheduler.cost_ns(rows))
        result = _execute(instance, inputs) if assembly is None else _execute_assembled(instance, assembly, inputs)
        computed_at = time.perf_counter_ns()
        ok = not isinstance(result, Exception)
        self._batch_ended(instance, rows, start, computed_at - start, ok, [])
        self._stats.ran_now(rows, start - started_ns, computed_at - start, time.perf_counter_ns() - started_ns, ok)
        if isinstance(result, Exception):
            raise result
        return result

    def precheck(self, deadline_ns: int = 0) -> None:
        """Admission for one row before the request is decoded: a refusal then costs no decoding either."""
        now = time.perf_counter_ns()
        with self._lock:
            if self._closing:
                raise ShuttingDown("the model version is stopping and takes no new requests")
            self._admit(now, 1, deadline_ns, now)

    def run_here(self) -> None:
        """Run the queued requests on this thread, unless the workers have taken them; leave any rest to them."""
        with self._lock:
            instance = self._free_instance()
            if instance is None or not self._queue:
                return
            batch, dropped = self._start_batch(instance, time.perf_counter_ns(), waited=False)
        self._drop(dropped)
        if batch:
            self._run(instance, batch)

    def state(self) -> QueueState:
        with self._lock:
            bound = self._queue_bound()
            busy_ns = self._retired_busy_ns + sum(instance.busy_ns for instance in self._instances)
            return QueueState(len(self._queue), self._queued_rows, len(self._instances),
                              sum(instance.busy for instance in self._instances), busy_ns, bound,
                              self._admission.correction)

    def choices(self) -> Choices:
        """What the scheduler chose, and the measurements behind it."""
        with self._lock:
            return self._scheduler.choices()

    def close(self) -> None:
        """Stop taking work: what is queued or running still completes, then the worker threads end."""
        with self._lock:
            self._closing = True
            self._lock.notify_all()

    def refuse_queued(self, error: Exception) -> int:
        """Answer everything still queued with `error` (a drain ran out of time); how many were refused."""
        with self._lock:
            refused = list(self._queue)
            for item in refused:
                item.queued = False
            self._queue.clear()
            self._queued_rows = 0
        for item in refused:
            self._finish_unrun(item, error, "stopped")
        return len(refused)

    @property
    def idle(self) -> bool:
        """Nothing queued and no batch running."""
        with self._lock:
            return not self._queue and not any(instance.busy for instance in self._instances)

    def join(self, timeout_s: float | None = None) -> bool:
        """Wait for the worker threads to end after close(); whether they have."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for thread in list(self._threads):
            thread.join(None if deadline is None else max(deadline - time.monotonic(), 0))
        return not any(thread.is_alive() for thread in self._threads)

    # -- under the lock --

    def _free_instance(self) -> _Instance | None:
        return next((instance for instance in self._instances if not instance.busy), None)

    def _row_ns(self) -> float:
        """How long the version takes per queued row: measured while it had a backlog (so it counts all that
        serving a request costs, not only session.run: a small model's requests cost far more than their run),
        else the batch cost line shared among the instances; 0 before anything was measured."""
        scheduler = self._scheduler
        if scheduler.drain_ns_per_row is not None:
            return scheduler.drain_ns_per_row
        if not scheduler.costs.measured:
            return 0.0
        limit = max(scheduler.row_limit, 1)
        return scheduler.cost_ns(limit) / limit / max(len(self._instances), 1)

    def _queue_bound(self) -> int | None:
        return self._admission.queue_bound(self._row_ns(), max(self._scheduler.row_limit, 1))

    def _admit(self, now: int, rows: int, deadline_ns: int, started_ns: int) -> int:
        """Admission's prediction of the time to answer (0 when the model is idle and no deadline asks), or the
        refusal raised (and counted)."""
        if not (self._queue or deadline_ns or any(instance.busy for instance in self._instances)):
            return 0  # an idle model with nothing queued takes a request without a deadline at once
        try:
            if deadline_ns and deadline_ns <= now:
                raise DeadlineExceeded("the request's deadline had passed when it reached the model")
            return self._predict(now, rows, deadline_ns)
        except DeadlineExceeded:
            self._stats.refused("expired", now - started_ns)
            raise
        except Overloaded as refused:
            self._stats.refused(refused.reason, now - started_ns)
            raise

    def _predict(self, now: int, rows: int, deadline_ns: int) -> int:
        scheduler = self._scheduler
        row_ns = self._row_ns()
        wait = own = 0.0
        if row_ns > 0:  # before the first run (no warmup) nothing is known to predict from
            limit = max(scheduler.row_limit, 1)
            running_left = max((instance.expected_end_ns - now for instance in self._instances if instance.busy),
                               default=0)
            wait = max(running_left, 0) / max(len(self._instances), 1) + self._queued_rows * row_ns
            own = scheduler.cost_ns(min(self._queued_rows % limit + rows, limit))
        return self._admission.admit(rows=rows, queued_rows=self._queued_rows, bound=self._queue_bound(),
                                     wait_ns=wait, own_ns=own,
                                     deadline_left_ns=deadline_ns - now if deadline_ns else None)

    def _arrived(self, now: int, rows: int) -> None:
        self._arrived_rows += rows
        if self._refill_rows and self._arrived_rows >= self._refill_rows:
            self._scheduler.refilled(now - self._free_since_ns)
            self._refill_rows = 0

    def _wait_ns(self, now: int) -> int:
        """How long the queued requests may still wait for company; 0 when a batch should go now."""
        if self._closing:
            return 0
        head = self._queue[0]
        waited = now - max(head.enqueued_ns, self._free_since_ns)
        deadline_left = head.deadline_ns - now if head.deadline_ns else None
        return self._scheduler.wait_ns(self._queued_rows, self._expected_rows, waited, deadline_left)

    def _starting(self, waited: bool) -> None:
        """A batch starts. One that did not wait for company slows the last batch's callers still coming back,
        so their refill is not timed (runtime.scheduler), unless the model is fast: its batch holds the cores for
        less than the callers' turnaround."""
        if not waited and not self._scheduler.fast:
            self._refill_rows = 0

    def _start_batch(self, instance: _Instance, now: int, *, waited: bool) -> tuple[list[_Pending], list[_Pending]]:
        """Take a batch for `instance` and mark it busy: the oldest live request first, then later ones with the
        same key while the rows fit, in order. Also returns the requests dropped as past their deadline.
        `waited`: the batch waited for company first (see _starting)."""
        scheduler = self._scheduler
        self._starting(waited)
        target = scheduler.batch_rows(self._queued_rows)
        batch: list[_Pending] = []
        dropped: list[_Pending] = []
        kept: deque[_Pending] = deque()
        rows = 0
        queue = self._queue
        while queue and (not batch or rows < target):
            item = queue.popleft()
            if item.deadline_ns and now + scheduler.cost_ns(rows + item.rows) > item.deadline_ns:
                item.queued = False
                dropped.append(item)
                self._queued_rows -= item.rows
            elif not batch or (item.key == batch[0].key and rows + item.rows <= target):
                item.queued = False
                batch.append(item)
                rows += item.rows
            else:
                kept.append(item)
        if kept:
            kept.extend(queue)
            self._queue = kept
        self._queued_rows -= rows
        self._claimed = False
        if batch:
            instance.busy = True
            instance.expected_end_ns = now + int(scheduler.cost_ns(rows))
        return batch, dropped

    # -- worker threads --

    def _serve(self, instance: _Instance) -> None:
        while (work := self._next_batch(instance)) is not None:
            batch, dropped = work
            self._drop(dropped)
            if batch:
                self._run(instance, batch)

    def _next_batch(self, instance: _Instance) -> tuple[list[_Pending], list[_Pending]] | None:
        """Block until a batch should run on `instance`; None once it is retired, or closed and drained."""
        waited = False  # chose to wait for company: what follows is no hand-over time
        with self._lock:
            while True:
                if instance.retired or (self._closing and not self._queue):
                    return None
                if instance.busy or not self._queue:
                    self._lock.wait()
                    continue
                now = time.perf_counter_ns()
                wait_ns = self._wait_ns(now)
                if wait_ns <= 0:
                    if not waited:
                        self._scheduler.dispatched(now - max(self._queue[0].enqueued_ns, self._free_since_ns))
                    return self._start_batch(instance, now, waited=waited)
                waited = True
                self._lock.wait(wait_ns / 1e9)

    def _run(self, instance: _Instance, batch: list[_Pending]) -> None:
        """Run the merged batch and answer each request; if the batch fails, run each request alone."""
        start = time.perf_counter_ns()
        for item in batch:
            self._stats.queued(start - item.enqueued_ns)
        rows = sum(item.rows for item in batch)
        assembly = batch[0].assembly
        results: list[Tensors | BaseException]
        if assembly is not None:
            merged_at, computed_at, ok, results = _run_assembled(instance, assembly, batch)
        else:
            if len(batch) == 1:
                merged = batch[0].inputs
            else:
                merged = {name: staging.stack(name, [item.inputs[name] for item in batch], rows)
                          for name in batch[0].inputs}
            merged_at = time.perf_counter_ns()
            outputs = _execute(instance, merged)
            computed_at = time.perf_counter_ns()
            ok = not isinstance(outputs, Exception)
            if len(batch) == 1:
                results = [outputs]
            elif not isinstance(outputs, Exception) and has_rows(outputs, rows):
                results = split_rows(outputs, [item.rows for item in batch])
            else:  # the batch failed, or its outputs cannot be cut into the requests' rows: each runs alone
                if not isinstance(outputs, Exception):
                    self._warn_rowless(outputs, rows)
                results = [_execute(instance, item.inputs) for item in batch]
        rows = rows or 1
        self._stats.batch_done(rows, merged_at - start, computed_at - merged_at, time.perf_counter_ns() - computed_at)
        self._batch_ended(instance, rows, start, computed_at - merged_at, ok, batch)
        for item, result in zip(batch, results, strict=True):
            self._stats.request_done(time.perf_counter_ns() - item.started_ns, not isinstance(result, BaseException),
                                     was_queued=True)
            _answer(item, result)

    def _warn_rowless(self, outputs: Tensors, rows: int) -> None:
        if not self._warned_rowless:
            self._warned_rowless = True
            shapes = {name: list(getattr(out, "shape", ())) for name, out in outputs.items()}
            log.warning("%s: a merged batch of %d rows gave outputs of shapes %s, not a row per input row; its "
                        "requests ran one by one (set max_batch_size: 0 for this model)", self._name, rows, shapes)

    def _batch_ended(self, instance: _Instance, rows: int, start: int, compute_ns: int, ok: bool,
                     batch: list[_Pending]) -> None:
        """Free the instance, and learn from the batch: costs, the service rate, admission's predictions."""
        with self._lock:
            ended = time.perf_counter_ns()
            instance.busy = False
            instance.busy_ns += ended - start
            if instance.retired:
                self._retired_busy_ns += ended - start
            if self._backlogged and self._free_since_ns:
                # batches back to back (the previous one's answering included): the version's service rate
                self._scheduler.drained(rows, ended - self._free_since_ns)
            self._backlogged = bool(self._queue)
            self._free_since_ns = ended
            self._expected_rows = self._queued_rows + rows
            self._arrived_rows, self._refill_rows = 0, rows
            if ok:
                self._scheduler.batch_done(rows, compute_ns, ended - start)
            for item in batch:
                if item.predicted_ns:
                    self._admission.answered(item.predicted_ns, ended - item.enqueued_ns)
            if self._queue:  # left over, or queued while this batch ran: the workers take them
                self._claimed = False
                self._lock.notify_all()

    def _drop(self, dropped: list[_Pending]) -> None:
        for item in dropped:
            self._finish_unrun(item, DeadlineExceeded("the request's deadline passed before it could be answered; "
                                                      "it was dropped from the queue, not run"), "expired")

    def _cancel(self, item: _Pending) -> None:
        with self._lock:
            if not item.queued:
                return
            item.queued = False
            self._queue.remove(item)
            self._queued_rows -= item.rows
        self._finish_unrun(item, Cancelled("the caller went away; the queued request was dropped"), "cancelled")

    def _finish_unrun(self, item: _Pending, error: Exception, reason: str) -> None:
        self._stats.dropped(reason, time.perf_counter_ns() - item.started_ns)
        _answer(item, error)


def _answer(item: _Pending, result: Tensors | BaseException) -> None:
    try:
        item.done(result)
    except Exception:  # a front end's answer failed; the others still get theirs
        log.exception("answering a request failed")


def _execute(instance: _Instance, inputs: Tensors) -> Tensors | Exception:
    """The instance's outputs, or the error its run raised (answered to the requests of the batch)."""
    try:
        return instance.execute(inputs)
    except Exception as exc:
        return exc


def _execute_runs(instance: _Instance, assembled: Assembled) -> list[Tensors] | Exception:
    """Each of the assembled batch's runs, in order: their outputs, or the first error."""
    outputs = []
    for feeds in assembled.feeds:
        result = _execute(instance, feeds)
        if isinstance(result, Exception):
            return result
        outputs.append(result)
    return outputs


def _execute_assembled(instance: _Instance, assembly: Assembly, inputs: Tensors) -> Tensors | Exception:
    """One request through its assembly, alone: its answer, or its refusal or the run's error."""
    try:
        assembled = assembly.assemble([inputs])
    except Exception as exc:  # as in _run_assembled
        log.exception("assembling a batch failed")
        return exc
    if not assembled.feeds:
        error = assembled.errors[0]
        assert error is not None
        return error
    outputs = _execute_runs(instance, assembled)
    return outputs if isinstance(outputs, Exception) else assembled.answers(outputs)[0]


def _run_assembled(instance: _Instance, assembly: Assembly, batch: list[_Pending]
                   ) -> tuple[int, int, bool, list[Tensors | BaseException]]:
    """An assembled batch: when it was made and run, whether it ran (its time then counts as the batch's cost),
    and each request's answer. The requests the assembly refused get their refusal; when the batch fails, each
    other one runs alone."""
    try:
        assembled = assembly.assemble([item.inputs for item in batch])
    except Exception as exc:  # a fault of the assembly (its library), not of one request: the batch's answer
        log.exception("assembling a batch failed")
        now = time.perf_counter_ns()
        return now, now, False, [exc] * len(batch)
    merged_at = time.perf_counter_ns()
    outputs: list[Tensors] | Exception | None = None
    answers: list[Tensors] = []
    if assembled.feeds:
        outputs = _execute_runs(instance, assembled)
        if not isinstance(outputs, Exception):
            answers = assembled.answers(outputs)
    computed_at = time.perf_counter_ns()
    answered = iter(answers)
    results: list[Tensors | BaseException] = []
    for item, error in zip(batch, assembled.errors, strict=True):
        if error is not None:
            results.append(error)
        elif isinstance(outputs, Exception):
            results.append(outputs if len(batch) == 1 else _execute_assembled(instance, assembly, item.inputs))
        else:
            results.append(next(answered))
    return merged_at, computed_at, isinstance(outputs, list), results


def has_rows(outputs: Tensors, rows: int) -> bool:
    """Whether every output has `rows` rows, one per input row: what split_rows needs."""
    return all(isinstance(out, np.ndarray) and out.ndim and out.shape[0] == rows for out in outputs.values())


def split_rows(outputs: Tensors, rows: list[int]) -> list[Tensors]:
    """Each request's rows of merged outputs (`rows` of each, in order), as views."""
    parts, start = [], 0
    for count in rows:
        stop = start + count
        parts.append({name: out[start:stop] for name, out in outputs.items()})
        start = stop
    return parts
