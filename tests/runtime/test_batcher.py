"""The batcher on its own: merging by rows, limits, shape keys, preferred sizes, per-request errors."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

import numpy as np
import pytest

from ortserve.errors import ShuttingDown
from ortserve.runtime.admission import Admission, AdmissionPolicy
from ortserve.runtime.batcher import Batcher, Tensors
from ortserve.runtime.scheduler import BatchingPolicy, Scheduler
from ortserve.runtime.stats import VersionStats


class Recorder:
    """execute() that doubles its input and records the batch sizes it was given."""

    def __init__(self, fail_on: float | None = None) -> None:
        self.batches: list[int] = []
        self.fail_on = fail_on

    def __call__(self, inputs: Tensors) -> Tensors:
        x = inputs["x"]
        self.batches.append(x.shape[0])
        if self.fail_on is not None and (x == self.fail_on).any():
            raise ValueError("poisoned row")
        return {"y": x * 2}


def make_batcher(execute, stats: VersionStats | None = None, *, max_batch_size: int = 8,
                 max_queue_delay_us: int | None = 50_000, preferred_batch_sizes: tuple[int, ...] = (),
                 admission: AdmissionPolicy | None = None) -> Batcher:
    policy = BatchingPolicy(max_batch_size, None if max_queue_delay_us is None else max_queue_delay_us * 1000,
                            preferred_batch_sizes)
    return Batcher([execute], stats or VersionStats(), name="test", scheduler=Scheduler(policy),
                   admission=Admission(admission or AdmissionPolicy()))



def _submit(batcher: Batcher, x: np.ndarray) -> Future:
    """Queue one request; the future gets what the batcher hands to its callback."""
    future: Future = Future()
    batcher.submit({"x": x}, x.shape[0], x.shape[1:], future.set_result, time.perf_counter_ns())
    return future


def _run(recorder: Recorder, requests: list[np.ndarray], **options) -> list[Tensors | BaseException]:
    batcher = make_batcher(recorder, **options)
    futures = [_submit(batcher, x) for x in requests]
    try:
        return [future.result(timeout=30) for future in futures]
    finally:
        batcher.close()


def _rows(count: int, width: int = 3, value: float = 1.0) -> np.ndarray:
    return np.full((count, width), value, np.float32)


def test_rows_merge_and_split_back() -> None:
    recorder = Recorder()
    requests = [_rows(1, value=1), _rows(2, value=2), _rows(3, value=3)]
    results = _run(recorder, requests)
    assert recorder.batches == [6]
    for request, result in zip(requests, results, strict=True):
        np.testing.assert_array_equal(result["y"], request * 2)


def test_batches_never_exceed_max_batch_size() -> None:
    recorder = Recorder()
    _run(recorder, [_rows(3) for _ in range(5)], max_batch_size=7)
    assert all(size <= 7 for size in recorder.batches)
    assert sum(recorder.batches) == 15


def test_requests_with_other_non_batch_shapes_do_not_merge() -> None:
    recorder = Recorder()
    results = _run(recorder, [_rows(1, 3), _rows(1, 4), _rows(1, 3), _rows(2, 4)])
    assert sorted(recorder.batches) == [2, 3]
    assert [r["y"].shape for r in results] == [(1, 3), (1, 4), (1, 3), (2, 4)]


def test_one_failing_request_does_not_fail_the_others() -> None:
    recorder = Recorder(fail_on=-1)
    results = _run(recorder, [_rows(1), _rows(1, value=-1), _rows(2)])
    assert isinstance(results[1], ValueError)
    np.testing.assert_array_equal(results[0]["y"], _rows(1) * 2)
    np.testing.assert_array_equal(results[2]["y"], _rows(2) * 2)


class Gate(Recorder):
    """A Recorder whose first batch blocks until released, so that later requests queue behind it."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, inputs: Tensors) -> Tensors:
        if not self.entered.is_set():
            self.entered.set()
            assert self.release.wait(30)
        return super().__call__(inputs)


def test_zero_delay_runs_the_first_request_at_once_and_queues_the_rest_together() -> None:
    gate = Gate()
    batcher = make_batcher(gate, max_queue_delay_us=0)
    first = _submit(batcher, _rows(1))
    assert gate.entered.wait(30)  # running alone, without waiting for company
    rest = [_submit(batcher, _rows(1)) for _ in range(3)]
    gate.release.set()
    for future in [first, *rest]:
        future.result(timeout=30)
    batcher.close()
    assert gate.batches == [1, 3]


def test_a_request_queued_behind_a_batch_gets_the_delay_once_the_model_is_free() -> None:
    gate = Gate()
    batcher = make_batcher(gate, max_queue_delay_us=300_000)
    first = _submit(batcher, _rows(8))  # a full batch: runs at once
    assert gate.entered.wait(30)
    behind = _submit(batcher, _rows(1))
    time.sleep(0.4)  # longer than the delay: counted from its arrival, `behind` would now run alone
    gate.release.set()
    first.result(timeout=30)
    again = _submit(batcher, _rows(1))  # the answered caller comes back
    behind.result(timeout=30)
    again.result(timeout=30)
    batcher.close()
    assert gate.batches == [8, 2]


def test_a_lone_caller_is_not_kept_waiting_for_company() -> None:
    batcher = make_batcher(Recorder(), max_queue_delay_us=1_000_000)
    _submit(batcher, _rows(1)).result(timeout=30)  # the first request waits the delay: nothing is known yet
    start = time.perf_counter()
    for _ in range(3):
        _submit(batcher, _rows(1)).result(timeout=30)
    batcher.close()
    assert time.perf_counter() - start < 1.0  # each would wait the full second if it were held for company


def test_preferred_batch_size_dispatches_without_waiting() -> None:
    batcher = make_batcher(Recorder(), max_batch_size=16, max_queue_delay_us=5_000_000, preferred_batch_sizes=(4,))
    start = time.perf_counter()
    for future in [_submit(batcher, _rows(2)) for _ in range(2)]:
        future.result(timeout=30)
    batcher.close()
    assert time.perf_counter() - start < 1.0  # far below the 5 s queue delay


def test_unbatched_model_runs_requests_one_by_one() -> None:
    recorder = Recorder()
    _run(recorder, [_rows(2), _rows(2)], max_batch_size=0)
    assert recorder.batches == [2, 2]


@pytest.mark.parametrize("delay_us", [0, 100, 20_000])
def test_every_request_is_answered_under_load(delay_us: int) -> None:
    recorder = Recorder()
    requests = [_rows(1 + i % 3, value=i) for i in range(200)]
    results = _run(recorder, requests, max_queue_delay_us=delay_us)
    for request, result in zip(requests, results, strict=True):
        np.testing.assert_array_equal(result["y"], request * 2)
    assert sum(recorder.batches) == sum(r.shape[0] for r in requests)


def test_close_drains_queued_requests_then_stops_the_worker() -> None:
    gate = Gate()
    batcher = make_batcher(gate, max_batch_size=2, max_queue_delay_us=0)
    futures = [_submit(batcher, _rows(1)) for _ in range(5)]
    assert gate.entered.wait(30)
    batcher.close()
    with pytest.raises(ShuttingDown, match="stopping"):
        _submit(batcher, _rows(1))
    gate.release.set()
    assert [len(future.result(timeout=30)["y"]) for future in futures] == [1] * 5
    assert batcher.join(timeout_s=30)


def test_in_flight_counts_requests_until_answered() -> None:
    gate = Gate()
    stats = VersionStats()
    batcher = make_batcher(gate, stats, max_queue_delay_us=0)
    futures = [_submit(batcher, _rows(1)) for _ in range(3)]
    assert gate.entered.wait(30)
    assert stats.in_flight == 3
    gate.release.set()
    for future in futures:
        future.result(timeout=30)
    batcher.close()
    assert batcher.join(timeout_s=30)
    assert (stats.in_flight, stats.success.count) == (0, 3)


class ThreadRecorder(Recorder):
    """A Recorder that also notes which thread ran each batch."""

    def __init__(self, pause_s: float = 0.0) -> None:
        super().__init__()
        self.threads: list[str] = []
        self.pause_s = pause_s

    def __call__(self, inputs: Tensors) -> Tensors:
        self.threads.append(threading.current_thread().name)
        time.sleep(self.pause_s)
        return super().__call__(inputs)


def _submit_here(batcher: Batcher, x: np.ndarray, later: list) -> Future:
    future: Future = Future()
    batcher.submit({"x": x}, x.shape[0], x.shape[1:], future.set_result, time.perf_counter_ns(),
                   run_later=later.append)
    return future


WARM_RUNS = 5


def _warm(batcher: Batcher) -> None:
    """Requests through the worker, one by one, so the batcher has measured how long a run takes."""
    for _ in range(WARM_RUNS):
        _submit(batcher, _rows(1)).result(timeout=30)


def test_a_fast_models_requests_batch_and_run_on_the_callers_thread() -> None:
    recorder = ThreadRecorder()
    batcher = make_batcher(recorder, max_queue_delay_us=0)
    _warm(batcher)
    later: list = []
    requests = [_rows(1, value=1), _rows(2, value=2), _rows(1, value=3)]
    futures = [_submit_here(batcher, x, later) for x in requests]
    assert len(later) == 1 and not any(future.done() for future in futures)  # claimed, waiting for the caller
    later[0]()
    for request, future in zip(requests, futures, strict=True):
        np.testing.assert_array_equal(future.result(timeout=0)["y"], request * 2)
    batcher.close()
    assert recorder.batches == [1] * WARM_RUNS + [4]
    assert recorder.threads == ["test-0"] * WARM_RUNS + [threading.current_thread().name]


def test_a_request_without_run_later_hands_claimed_ones_to_the_worker() -> None:
    recorder = ThreadRecorder()
    batcher = make_batcher(recorder, max_queue_delay_us=0)
    _warm(batcher)
    later: list = []
    claimed = _submit_here(batcher, _rows(1), later)
    other = _submit(batcher, _rows(2))  # from another front end: wakes the worker, which takes both
    assert claimed.result(timeout=30)["y"].shape == (1, 3) and other.result(timeout=30)["y"].shape == (2, 3)
    later[0]()  # nothing left to run here
    batcher.close()
    assert recorder.batches == [1] * WARM_RUNS + [3]
    assert set(recorder.threads) == {"test-0"}


@pytest.mark.parametrize(("pause_s", "delay_us"), [(0.002, 0), (0.0, 1000)])
def test_slow_models_and_queue_delays_always_use_the_worker(pause_s: float, delay_us: int) -> None:
    recorder = ThreadRecorder(pause_s)
    batcher = make_batcher(recorder, max_queue_delay_us=delay_us)
    _warm(batcher)
    later: list = []
    for future in [_submit_here(batcher, _rows(1), later) for _ in range(3)]:
        future.result(timeout=30)
    batcher.close()
    assert later == []
    assert set(recorder.threads) == {"test-0"}


def test_run_now_takes_an_idle_fast_version_on_the_callers_thread() -> None:
    """The lean path: an idle version runs the request at once, here; a busy one declines (submit instead)."""
    ran_on: list[int] = []
    release = threading.Event()

    def execute(inputs: Tensors) -> Tensors:
        ran_on.append(threading.get_ident())
        if inputs["x"][0, 0] == 9:  # the request that holds the instance
            release.wait(10)
        return {"y": inputs["x"] * 2}

    stats = VersionStats()
    batcher = make_batcher(execute, stats, max_queue_delay_us=None)
    try:
        for _ in range(3):  # the scheduler learns that the model is fast from the batches it runs
            _submit(batcher, _rows(1)).result(timeout=10)
        answer = batcher.run_now({"x": _rows(2, value=4)}, 2, time.perf_counter_ns())
        assert answer is not None
        np.testing.assert_array_equal(answer["y"], _rows(2, value=8))
        assert ran_on[-1] == threading.get_ident()
        assert stats.per_batch_size[2].count == 1 and stats.success.count == 4 and stats.in_flight == 0

        held = _submit(batcher, _rows(1, value=9))  # a worker runs it and waits
        deadline = time.monotonic() + 10
        while batcher.idle and time.monotonic() < deadline:
            time.sleep(0.001)
        assert batcher.run_now({"x": _rows(1)}, 1, time.perf_counter_ns()) is None  # busy: not taken
        release.set()
        held.result(timeout=10)
    finally:
        release.set()
        batcher.close()


def test_run_now_takes_a_slow_versions_full_batch_but_leaves_it_a_partial_one() -> None:
    """A batch of a slow model may gain company by waiting (the scheduler's choice), so one row goes through the
    queue; a full batch, or a bulk call's slice, waits for nothing, and runs on the caller's thread with no
    hand-over."""
    ran_on: list[int] = []

    def execute(inputs: Tensors) -> Tensors:
        ran_on.append(threading.get_ident())
        time.sleep(0.003)  # past RUN_HERE_BELOW_NS: not a fast model
        return {"y": inputs["x"] * 2}

    batcher = make_batcher(execute, max_batch_size=4, max_queue_delay_us=None)
    try:
        assert batcher.run_now({"x": _rows(1)}, 1, time.perf_counter_ns()) is None
        answer = batcher.run_now({"x": _rows(4, value=3)}, 4, time.perf_counter_ns())
        assert answer is not None
        np.testing.assert_array_equal(answer["y"], _rows(4, value=6))
        assert ran_on == [threading.get_ident()]
        # a bulk caller's last slice: its own rows are all it would have waited for
        tail = batcher.run_now({"x": _rows(1, value=5)}, 1, time.perf_counter_ns(), bulk=True)
        assert tail is not None
        np.testing.assert_array_equal(tail["y"], _rows(1, value=10))
        assert ran_on == [threading.get_ident()] * 2
    finally:
        batcher.close()


def test_run_now_raises_the_models_error_and_counts_it() -> None:
    stats = VersionStats()
    batcher = make_batcher(Recorder(fail_on=7.0), stats, max_queue_delay_us=None)
    try:
        for _ in range(3):
            _submit(batcher, _rows(1)).result(timeout=10)
        with pytest.raises(ValueError, match="poisoned"):
            batcher.run_now({"x": _rows(1, value=7)}, 1, time.perf_counter_ns())
        assert stats.failure.count == 1
        assert batcher.run_now({"x": _rows(1)}, 1, time.perf_counter_ns()) is not None  # the instance is free
    finally:
        batcher.close()
