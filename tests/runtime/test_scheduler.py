"""The batch cost fit and the scheduler's choices, on costs that are known."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

import numpy as np
import pytest

from ortserve.runtime.batcher import Batcher
from ortserve.runtime.costs import FORGET_AFTER_NS, HALF_LIFE_NS, BatchCosts
from ortserve.runtime.scheduler import IDLE_SHARE, REFILL_FRESH_NS, BatchingPolicy, Scheduler
from ortserve.runtime.stats import VersionStats
from ortserve.runtime.warmup import ONE_THREAD_MARGIN, one_thread_wins
from tests.runtime.test_batcher import Recorder, make_batcher

MS = 1_000_000


def _costs(fixed_ns: float, per_row_ns: float, sizes: tuple[int, ...] = (1, 2, 4, 8)) -> BatchCosts:
    costs = BatchCosts()
    for rows in sizes:
        costs.observe(rows, int(fixed_ns + per_row_ns * rows))
    return costs


def test_the_fit_recovers_a_known_cost_line() -> None:
    costs = _costs(10 * MS, 20 * MS)
    assert costs.fixed_ns == pytest.approx(10 * MS, rel=1e-6)
    assert costs.per_row_ns == pytest.approx(20 * MS, rel=1e-6)
    assert costs.cost_ns(16) == pytest.approx(330 * MS, rel=1e-6)


def test_the_fit_follows_a_size_whose_cost_changes() -> None:
    costs = _costs(0, 1_000, sizes=(1, 8))
    for _ in range(200):  # batches of 8 became twice as costly
        costs.observe(8, 16_000)
    assert costs.sizes[8] == pytest.approx(16_000, rel=0.01)
    assert costs.per_row_ns > 1_000


def _calm(costs: BatchCosts, now: list[int], seconds: float) -> None:
    """Batches of 1-8 rows on the line 90 us + 2 us a row, 300 a second."""
    for step in range(int(seconds * 300)):
        now[0] += 1_000_000_000 // 300
        rows = (1, 2, 3, 4, 8)[step % 5]
        costs.observe(rows, 90_000 + 2_000 * rows)


def test_a_bursts_slow_batches_stop_counting_once_calm_returns() -> None:
    now = [0]
    costs = _costs(90_000, 2_000, sizes=(1, 8, 64, 256))  # warmup's calibration, on the calm line
    costs.age_with(lambda: now[0])
    _calm(costs, now, 2)
    for rows in range(9, 400, 3):  # a burst: large batches run 2-50x slower, waiting for the GIL and the cores
        now[0] += 25 * MS
        costs.observe(rows, 1_000_000 + 7_000 * (rows % 11) * 100)
    assert costs.fixed_ns > 500_000
    _calm(costs, now, 2 * HALF_LIFE_NS / 1e9)
    assert costs.fixed_ns < 500_000  # lowered while the burst's sizes are still remembered
    _calm(costs, now, FORGET_AFTER_NS / 1e9)
    assert set(costs.sizes) == {1, 2, 3, 4, 8, 64, 256}  # the burst's are forgotten, the calibration kept
    assert costs.fixed_ns == pytest.approx(90_000, rel=1e-6)
    assert costs.per_row_ns == pytest.approx(2_000, rel=1e-6)


def test_calibration_never_ages_and_shapes_the_line_where_serving_measured_nothing() -> None:
    costs = _costs(10 * MS, 20 * MS, sizes=(1, 2, 4, 8, 16))  # warmup's calibration
    now = [10**15]
    costs.age_with(lambda: now[0])  # serving starts, however long after warmup began
    now[0] += 100 * FORGET_AFTER_NS  # idle for a long while, then batches of one row, 5 ms slower than calibrated
    for _ in range(20):
        costs.observe(1, 35 * MS)
    assert set(costs.sizes) == {1, 2, 4, 8, 16}
    assert costs.per_row_ns == pytest.approx(20 * MS, rel=0.05)  # the calibration's slope
    assert costs.cost_ns(1) == pytest.approx(35 * MS, rel=0.05)  # through what serving measures


def test_without_calibration_the_two_sizes_served_last_are_kept_however_old() -> None:
    now = [0]
    costs = BatchCosts()
    costs.age_with(lambda: now[0])
    for rows in (1, 2, 4, 8):
        now[0] += MS
        costs.observe(rows, 10 * MS + 20 * MS * rows)
    now[0] += 100 * FORGET_AFTER_NS
    costs.observe(1, 30 * MS)
    assert set(costs.sizes) == {1, 4, 8}  # it, and the two measured last before it
    assert costs.fixed_ns == pytest.approx(10 * MS, rel=1e-6)
    assert costs.per_row_ns == pytest.approx(20 * MS, rel=1e-6)


def test_one_size_seen_counts_as_cost_per_row() -> None:
    costs = BatchCosts()
    costs.observe(4, 4_000)
    assert (costs.fixed_ns, costs.per_row_ns) == (0.0, 1_000.0)


def _scheduler(fixed_ns: float, per_row_ns: float, *, refill_ns: float | None = None, **policy) -> Scheduler:
    scheduler = Scheduler(BatchingPolicy(**({"max_batch_size": 32} | policy)), _costs(fixed_ns, per_row_ns))
    if refill_ns is not None:
        scheduler.refilled(int(refill_ns))
    return scheduler


def test_a_slow_batch_waits_for_callers_expected_back_soon() -> None:
    """ResNet50-like: 300 ms for 8 rows, the answered callers back within 3 ms."""
    scheduler = _scheduler(10 * MS, 37 * MS, refill_ns=3 * MS)
    cap = IDLE_SHARE * scheduler.cost_ns(8)
    assert scheduler.wait_ns(queued_rows=1, expected_rows=8, waited_ns=0, head_deadline_left_ns=None) == int(cap)
    assert scheduler.wait_ns(1, 8, 2 * MS, None) == int(cap - 2 * MS)
    assert scheduler.wait_ns(8, 8, 0, None) == 0  # all there
    assert scheduler.wait_ns(1, 8, int(cap) + 1, None) == 0  # waited as long as they are worth: not coming
    late = _scheduler(10 * MS, 37 * MS, refill_ns=100 * MS)  # callers back later than the cap: no wait at all
    assert late.wait_ns(1, 8, 0, None) == 0


def test_a_batch_of_mostly_fixed_cost_waits_as_long_as_a_batch_of_the_rest_would_cost() -> None:
    """Memory-bound: 4 ms a batch however few rows (its weights read once), 0.1 ms a row. Callers back within
    1.5 ms are worth waiting for, though that is more than IDLE_SHARE of the batch: running without them costs
    another 4 ms batch for them later."""
    scheduler = _scheduler(4 * MS, 0.1 * MS, refill_ns=1.5 * MS)
    assert IDLE_SHARE * scheduler.cost_ns(8) < 1.5 * MS
    assert scheduler.wait_ns(queued_rows=4, expected_rows=8, waited_ns=0, head_deadline_left_ns=None) == 4 * MS
    late = _scheduler(4 * MS, 0.1 * MS, refill_ns=5 * MS)
    assert late.wait_ns(4, 8, 0, None) == 0


def test_a_late_refill_is_measured_again_once_it_is_old() -> None:
    """Callers measured to come back too late stop the waiting, which stops the measuring (a batch started at
    once slows the callers it does not wait for): after REFILL_FRESH_NS, a batch waits again to find out."""
    now = [0]
    scheduler = Scheduler(BatchingPolicy(32), _costs(10 * MS, 37 * MS), clock=lambda: now[0])
    scheduler.refilled(100 * MS)
    assert scheduler.wait_ns(1, 8, 0, None) == 0
    now[0] += REFILL_FRESH_NS // 2
    assert scheduler.wait_ns(1, 8, 0, None) == 0
    now[0] += REFILL_FRESH_NS // 2
    assert scheduler.wait_ns(1, 8, 0, None) == int(IDLE_SHARE * scheduler.cost_ns(8))


def test_a_hand_over_counts_only_while_it_is_measured() -> None:
    """A burst's hand-overs (workers waiting 2 ms for the GIL) stop counting once no more are measured: a fast
    model's batches run on the callers' threads, with none to measure."""
    now = [0]
    scheduler = Scheduler(BatchingPolicy(32), _costs(50_000, 2_000), clock=lambda: now[0])
    calm_cap = scheduler.choices().max_wait_ns
    for _ in range(40):
        scheduler.dispatched(2 * MS)
    assert scheduler.choices().max_wait_ns == pytest.approx(2 * MS, rel=0.01)
    now[0] += REFILL_FRESH_NS
    assert scheduler.choices().max_wait_ns == calm_cap < 2 * MS


def test_a_lone_caller_and_a_fast_model_never_wait() -> None:
    slow = _scheduler(10 * MS, 37 * MS, refill_ns=3 * MS)
    assert slow.wait_ns(queued_rows=1, expected_rows=1, waited_ns=0, head_deadline_left_ns=None) == 0
    fast = _scheduler(20_000, 2_000, refill_ns=300_000)  # MLP-like: 36 us for 8 rows, callers back in 300 us
    assert fast.wait_ns(1, 8, 0, None) == 0


def test_no_wait_past_the_oldest_requests_deadline() -> None:
    scheduler = _scheduler(10 * MS, 37 * MS, refill_ns=3 * MS)
    assert scheduler.wait_ns(1, 8, 0, head_deadline_left_ns=100 * MS) == 0  # a batch of 8 alone takes 306 ms
    assert scheduler.wait_ns(1, 8, 0, head_deadline_left_ns=2000 * MS) > 0


def test_a_configured_delay_is_kept() -> None:
    scheduler = _scheduler(10 * MS, 37 * MS, refill_ns=3 * MS, max_queue_delay_ns=5 * MS)
    assert scheduler.wait_ns(1, 8, 1 * MS, None) == 4 * MS
    assert scheduler.wait_ns(8, 8, 1 * MS, None) == 0
    assert scheduler.choices().max_wait_ns == 5 * MS and not scheduler.choices().adaptive


def test_preferred_sizes_and_the_row_limit_decide_the_rows_taken() -> None:
    scheduler = _scheduler(1 * MS, 1 * MS, max_batch_size=16, preferred_batch_sizes=(4, 8))
    assert scheduler.wait_ns(5, 16, 0, None) == 0  # a preferred size is reached
    assert scheduler.batch_rows(5) == 4 and scheduler.batch_rows(12) == 8 and scheduler.batch_rows(3) == 16


def test_batches_grow_only_while_a_row_gets_cheaper() -> None:
    # 10 ms + 20 ms a row: at 25 rows a row costs within 2 % of what it costs at 32
    assert _scheduler(10 * MS, 20 * MS).row_limit == 25
    assert _scheduler(0, 20 * MS).row_limit == 8  # no fixed part: no gain, but never under the size warmup timed
    assert _scheduler(10 * MS, 0).row_limit == 32  # all fixed: every row more is free
    assert _scheduler(10 * MS, 20 * MS, max_queue_delay_ns=0).row_limit == 32  # configured batching: as configured


def test_a_latency_objective_caps_the_rows_of_a_batch() -> None:
    scheduler = _scheduler(10 * MS, 20 * MS, latency_slo_ns=200 * MS)
    assert scheduler.row_limit == 4  # (0.5 * 200 - 10) / 20 ms


class KnownCost(Recorder):
    """A model whose batch takes `fixed_s + per_row_s * rows` (sleeping, so threads run beside it)."""

    def __init__(self, fixed_s: float, per_row_s: float) -> None:
        super().__init__()
        self.fixed_s, self.per_row_s = fixed_s, per_row_s

    def __call__(self, inputs):
        time.sleep(self.fixed_s + self.per_row_s * inputs["x"].shape[0])
        return super().__call__(inputs)


def _closed_loop(batcher: Batcher, think_s: list[float], rounds: int) -> None:
    """One thread a caller, each sending a one-row request, waiting for its answer, then for its think time,
    `rounds` times; the batcher is closed after."""

    def caller(think: float) -> None:
        for _ in range(rounds):
            future: Future = Future()
            batcher.submit({"x": np.ones((1, 3), np.float32)}, 1, (3,), future.set_result, time.perf_counter_ns())
            future.result(timeout=30)
            time.sleep(think)

    threads = [threading.Thread(target=caller, args=(think,)) for think in think_s]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    batcher.close()


def test_steady_callers_get_full_batches_on_a_slow_model() -> None:
    """Four closed-loop callers of a 40 ms + 10 ms/row model: after the first batches, every batch holds all
    four (counting the delay from arrivals, a returning caller would run alone and split the rest)."""
    model = KnownCost(0.04, 0.01)
    batcher = make_batcher(model, VersionStats(), max_queue_delay_us=None)
    rounds = 12
    _closed_loop(batcher, [0.0] * 4, rounds)
    assert sum(model.batches) == 4 * rounds
    settled = model.batches[4:]
    assert settled.count(4) >= len(settled) - 1, model.batches


def test_callers_coming_back_one_by_one_get_full_batches_on_a_memory_bound_model() -> None:
    """Four closed-loop callers back 2, 6, 10 and 14 ms after their answer, on a model that takes 30 ms a batch
    and 1 ms a row: waiting 14 ms for the last is cheaper than the 30 ms batch it would take alone. With a wait
    capped at IDLE_SHARE of the run (6.8 ms) the batches split, and then stopped waiting at all."""
    model = KnownCost(0.03, 0.001)
    batcher = make_batcher(model, VersionStats(), max_queue_delay_us=None)
    rounds = 10
    _closed_loop(batcher, [0.002 + 0.004 * index for index in range(4)], rounds)
    assert sum(model.batches) == 4 * rounds
    settled = model.batches[4:]
    assert settled.count(4) >= len(settled) - 1, model.batches


def test_a_batch_started_at_once_does_not_time_the_callers_it_did_not_wait_for() -> None:
    """Eight closed-loop callers, batches of at most 4: one half is always queued when the other's batch ends, so
    every batch starts at once and the answered half comes back while the next batch runs: no refill time. (The
    batch runs 34 ms, which a caller thread takes to come back even on a busy machine; 9 ms was not, in CI.)"""
    batcher = make_batcher(KnownCost(0.03, 0.001), VersionStats(), max_batch_size=4, max_queue_delay_us=None)
    _closed_loop(batcher, [0.0] * 8, 10)
    assert batcher.choices().refill_ns is None


def test_one_thread_is_kept_when_faster_at_one_row_and_close_at_every_other_size_measured() -> None:
    pool = _costs(0, 1_000, sizes=(1, 8))
    assert one_thread_wins(pool, _costs(0, 500, sizes=(1, 8)))
    assert not one_thread_wins(pool, _costs(0, 2_000, sizes=(1, 8)))
    assert not one_thread_wins(pool, _costs(0, 500, sizes=(1,)))  # a size it did not measure counts against it
    close = BatchCosts()  # faster at one row, 5 % slower at 8: the pool's edge there is within the margin
    close.observe(1, 900)
    close.observe(8, int(8_000 * (1 + ONE_THREAD_MARGIN / 2)))
    assert one_thread_wins(pool, close)
    far = BatchCosts()  # faster at one row, but the pool runs 8 rows 1.5x faster
    far.observe(1, 900)
    far.observe(8, 12_000)
    assert not one_thread_wins(pool, far)
    slower_alone = BatchCosts()  # one row is where one thread must win outright
    slower_alone.observe(1, 1_050)
    slower_alone.observe(8, 7_000)
    assert not one_thread_wins(pool, slower_alone)


def test_what_serving_measured_never_becomes_calibration() -> None:
    """A second clock (a scheduler built again on the same costs) keeps served sizes ageing: a burst's sizes
    made a prior would never be forgotten."""
    now = [0]
    costs = _costs(90_000, 2_000, sizes=(1, 8))
    costs.age_with(lambda: now[0])
    costs.observe(300, 30_000_000)  # a burst's batch
    costs.age_with(lambda: now[0])
    _calm(costs, now, FORGET_AFTER_NS / 1e9 + 2)
    assert 300 not in costs.sizes
