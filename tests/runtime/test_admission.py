"""Admission, deadlines and withdrawals in the batcher: refused before a queue slot, dropped before a run."""

from __future__ import annotations

import time
from concurrent.futures import Future

import numpy as np
import pytest

from ortserve.errors import Cancelled, DeadlineExceeded, Overloaded
from ortserve.runtime.admission import RECENT_ANSWERS, Admission, AdmissionPolicy
from ortserve.runtime.batcher import Batcher
from ortserve.runtime.costs import BatchCosts
from ortserve.runtime.scheduler import BatchingPolicy, Scheduler
from ortserve.runtime.stats import VersionStats
from tests.runtime.test_batcher import Gate

MS = 1_000_000


def _batcher(gate: Gate, stats: VersionStats, *, per_row_ms: float = 50.0, **admission) -> Batcher:
    """Batches of one row that the batcher believes take `per_row_ms` (as warmup would have measured)."""
    costs = BatchCosts()
    costs.observe(1, int(per_row_ms * MS))
    return Batcher([gate], stats, name="test", scheduler=Scheduler(BatchingPolicy(1, 0), costs),
                   admission=Admission(AdmissionPolicy(**admission)))


def _submit(batcher: Batcher, deadline_ns: int = 0) -> tuple[Future, object]:
    future: Future = Future()
    cancel = batcher.submit({"x": np.ones((1, 3), np.float32)}, 1, (3,), future.set_result, time.perf_counter_ns(),
                            deadline_ns=deadline_ns)
    return future, cancel


def _after(ms: float) -> int:
    return time.perf_counter_ns() + int(ms * MS)


def test_a_full_queue_refuses_at_once_with_a_retry_hint() -> None:
    gate, stats = Gate(), VersionStats()
    batcher = _batcher(gate, stats, max_queue_rows=3)
    running, _ = _submit(batcher)
    assert gate.entered.wait(30)
    queued = [_submit(batcher)[0] for _ in range(3)]
    with pytest.raises(Overloaded, match="queue holds 3 rows, the most it takes is 3") as refused:
        _submit(batcher)
    assert refused.value.reason == "queue_full" and refused.value.retry_after_s >= 1
    gate.release.set()
    for future in [running, *queued]:
        assert future.result(timeout=30)["y"].shape == (1, 3)
    batcher.close()
    assert stats.refusals == {"queue_full": 1} and stats.in_flight == 0


def test_the_derived_bound_is_the_rows_run_in_max_wait() -> None:
    gate, stats = Gate(), VersionStats()
    batcher = _batcher(gate, stats, per_row_ms=100.0, max_queue_wait_ns=500 * MS)
    assert batcher.state().queue_bound == 5
    gate.release.set()
    batcher.close()


def test_a_request_that_cannot_meet_its_deadline_is_refused_before_it_queues() -> None:
    gate, stats = Gate(), VersionStats()
    batcher = _batcher(gate, stats)
    _submit(batcher)
    assert gate.entered.wait(30)
    for _ in range(4):
        _submit(batcher)  # 4 x 50 ms ahead, plus the running batch
    with pytest.raises(Overloaded, match="after its deadline") as refused:
        _submit(batcher, deadline_ns=_after(150))
    assert refused.value.reason == "deadline"
    accepted, _ = _submit(batcher, deadline_ns=_after(60_000))
    gate.release.set()
    assert accepted.result(timeout=30)["y"].shape == (1, 3)
    batcher.close()
    assert stats.refusals == {"deadline": 1} and len(gate.batches) == 6


def test_a_request_whose_deadline_passes_in_the_queue_is_dropped_unrun() -> None:
    gate, stats = Gate(), VersionStats()
    batcher = _batcher(gate, stats, per_row_ms=1.0, enabled=False)  # admission off: it is queued anyway
    _submit(batcher)
    assert gate.entered.wait(30)
    late, _ = _submit(batcher, deadline_ns=_after(20))
    on_time, _ = _submit(batcher)
    time.sleep(0.05)
    gate.release.set()
    assert isinstance(late.result(timeout=30), DeadlineExceeded)
    assert on_time.result(timeout=30)["y"].shape == (1, 3)
    batcher.close()
    assert gate.batches == [1, 1] and stats.drops == {"expired": 1}


def test_a_withdrawn_request_leaves_the_queue_and_is_never_run() -> None:
    gate, stats = Gate(), VersionStats()
    batcher = _batcher(gate, stats)
    _submit(batcher)
    assert gate.entered.wait(30)
    withdrawn, cancel = _submit(batcher)
    assert batcher.state().queued_rows == 1
    cancel()
    assert isinstance(withdrawn.result(timeout=0), Cancelled)
    assert batcher.state().queued_rows == 0
    gate.release.set()
    batcher.close()
    assert batcher.join(30)
    assert gate.batches == [1] and stats.drops == {"cancelled": 1} and stats.in_flight == 0


def test_a_latency_objective_refuses_what_would_be_answered_too_late() -> None:
    gate, stats = Gate(), VersionStats()
    batcher = _batcher(gate, stats, latency_slo_ns=120 * MS)
    _submit(batcher)
    assert gate.entered.wait(30)
    _submit(batcher)  # answered about 100 ms from now: within the objective
    with pytest.raises(Overloaded, match="over its latency objective of 120 ms"):
        _submit(batcher)
    gate.release.set()
    batcher.close()
    assert stats.refusals == {"latency_slo": 1}


def test_without_admission_nothing_is_refused() -> None:
    gate, stats = Gate(), VersionStats()
    batcher = _batcher(gate, stats, enabled=False, max_queue_rows=1, latency_slo_ns=MS)
    futures = [_submit(batcher)[0] for _ in range(6)]
    assert batcher.state().queue_bound is None
    gate.release.set()
    assert all(future.result(timeout=30)["y"].shape == (1, 3) for future in futures)
    batcher.close()
    assert stats.refusals == {}


def test_the_correction_learns_how_late_answers_really_are() -> None:
    admission = Admission(AdmissionPolicy())
    for _ in range(200):
        admission.answered(predicted_ns=10 * MS, actual_ns=20 * MS)
    assert 1.9 < admission.correction < 2.5
    for _ in range(20):
        admission.answered(predicted_ns=1_000, actual_ns=1_000_000)  # too short to learn from
    assert admission.correction < 2.5


def test_the_correction_covers_the_late_tail_not_the_mean_and_forgets_it() -> None:
    """One admitted request in 20 taking 1.5x its prediction: admitting at the edge of a deadline by the mean
    (1.025) would make each of those late; the correction is the tail's."""
    admission = Admission(AdmissionPolicy())
    for index in range(400):
        admission.answered(predicted_ns=100 * MS, actual_ns=(150 if index % 20 == 0 else 100) * MS)
    assert admission.correction == pytest.approx(1.5)
    for _ in range(RECENT_ANSWERS):
        admission.answered(predicted_ns=100 * MS, actual_ns=100 * MS)
    assert admission.correction == pytest.approx(1.0)


def test_a_request_already_past_its_deadline_is_reported_as_such_not_as_overload() -> None:
    gate, stats = Gate(), VersionStats()
    batcher = _batcher(gate, stats)
    with pytest.raises(DeadlineExceeded, match="had passed when it reached the model"):
        _submit(batcher, deadline_ns=time.perf_counter_ns() - 1)
    with pytest.raises(DeadlineExceeded):
        batcher.precheck(time.perf_counter_ns() - 1)
    gate.release.set()
    batcher.close()
    assert stats.refusals == {"expired": 2} and gate.batches == []
