"""Batch sizing at warmup (runtime.sizing) and the choice of session as batches run (runtime.threads), on
sessions whose run times are known: the timing is replaced by a cost line per session, so the choices are the
functions' alone."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

from ortserve.dtypes import from_onnx
from ortserve.runtime import sizing
from ortserve.runtime.costs import BatchCosts
from ortserve.runtime.signature import Signature, TensorSpec
from ortserve.runtime.sizing import LARGEST_DEFAULT_ROWS, size_batches
from ortserve.runtime.threads import EXPLORE_EVERY, TRY_AFTER_NS, ThreadChoice

US = 1_000


@dataclass(frozen=True)
class Line:
    """A session stand-in: a batch of `rows` takes fixed + per_row * rows ns."""

    fixed_ns: int
    per_row_ns: int

    def ns(self, rows: int) -> int:
        return self.fixed_ns + self.per_row_ns * rows


@pytest.fixture
def timed_by_line(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Line, int]]:
    """Each timing asked for, as (session, rows); the answer is the session's line."""
    asked: list[tuple[Line, int]] = []

    def timed(_model: str, sessions: list[Line], feeds: dict[str, np.ndarray]) -> list[int]:
        rows = next(iter(feeds.values())).shape[0]
        asked.extend((session, rows) for session in sessions)
        return [session.ns(rows) for session in sessions]

    monkeypatch.setattr(sizing, "timed", timed)
    return asked


SIGNATURE = Signature(inputs=(TensorSpec("x", from_onnx("tensor(float)"), (-1, 4)),),
                      outputs=(TensorSpec("y", from_onnx("tensor(float)"), (-1, 2)),))


def _calibrated(line: Line) -> BatchCosts:
    costs = BatchCosts()
    for rows in (1, 8):
        costs.observe(rows, line.ns(rows))
    return costs


def _size(narrow: Line, wide: Line | None, max_batch_size: int = 32, *, grow: bool = True) -> sizing.Sizing:
    return size_batches("m", narrow, wide, SIGNATURE, {}, max_batch_size, grow=grow,  # type: ignore[arg-type]
                        costs=_calibrated(narrow))


def test_both_sessions_are_timed_at_every_size_and_the_faster_sets_the_limit(
        timed_by_line: list[tuple[Line, int]]) -> None:
    narrow, wide = Line(10 * US, 4 * US), Line(60 * US, 2 * US)  # the pool wins from 26 rows
    chosen = _size(narrow, wide)
    # rows keep getting cheaper on the pool by more than the tolerance all the way up
    assert chosen.max_batch_size == LARGEST_DEFAULT_ROWS
    sizes = (16, 32, 64, 128, 256, 512)
    assert [(session is wide, rows) for session, rows in timed_by_line] == [
        (is_wide, rows) for rows in (*sizes, *reversed(sizes)) for is_wide in (False, True)]  # twice, up then down
    assert chosen.both[16] == (narrow.ns(16) / 16, wide.ns(16) / 16)
    assert set(chosen.both) == {16, 32, 64, 128, 256, 512}


def test_a_model_whose_rows_cost_the_same_keeps_the_default(timed_by_line: list[tuple[Line, int]]) -> None:
    chosen = _size(Line(5 * US, 100 * US), None)
    assert chosen == sizing.Sizing(32)
    assert [rows for _, rows in timed_by_line] == [32, 64, 128]  # two doublings timed that did not pay


@dataclass(frozen=True)
class Table:
    """A session stand-in whose batch of `rows` costs per_row[rows] ns a row."""

    per_row: dict[int, int]

    def ns(self, rows: int) -> int:
        return self.per_row[rows] * rows


def _size_by_table(narrow: object, pool: object | None = None) -> sizing.Sizing:
    """size_batches over stand-ins timed by table, with an unconfigured limit (default 32)."""
    return size_batches("m", narrow, pool, SIGNATURE, {}, 32, grow=True,  # type: ignore[arg-type]
                        costs=_calibrated(Line(10 * US, 3 * US)))


def test_one_timing_that_does_not_pay_does_not_stop_the_growth(timed_by_line: list[tuple[Line, int]]) -> None:
    # 128 rows timed while the second core was busy: no cheaper than 64; 256 and 512 are
    noisy = Table({32: 3000, 64: 2600, 128: 2600, 256: 2200, 512: 2000})
    chosen = _size_by_table(noisy)
    assert chosen.max_batch_size == 512


def test_a_pool_is_timed_past_its_flat_sizes(timed_by_line: list[tuple[Line, int]]) -> None:
    # the pool no faster than one thread up to 128 rows (its second core not yet with it), then far faster
    one_thread = Table({16: 4200, 32: 3900, 64: 3900, 128: 3900, 256: 3900, 512: 3900})
    pool = Table({16: 4600, 32: 4300, 64: 4000, 128: 4100, 256: 2300, 512: 2200})
    chosen = _size_by_table(one_thread, pool)
    assert chosen.max_batch_size == 512
    assert chosen.both[256] == (3900, 2300)
    alone = _size_by_table(one_thread)
    assert alone == sizing.Sizing(32)  # one session: two flat doublings end the timing


class Spells:
    """A session stand-in whose cost per row at a size changes from one timing to the next (its list, in turn)."""

    def __init__(self, per_row: dict[int, list[int]]) -> None:
        self.per_row = {rows: iter(costs) for rows, costs in per_row.items()}

    def ns(self, rows: int) -> int:
        return next(self.per_row[rows]) * rows


def test_sizes_a_pool_caught_slow_are_timed_again(timed_by_line: list[tuple[Line, int]]) -> None:
    one_thread = Table({16: 4200, 32: 3900, 64: 3900, 128: 3900, 256: 3900, 512: 3900})
    # the first pass finds the pool fast at 128 and slow above it; the second, largest first, fast everywhere
    pool = Spells({16: [4600, 4600], 32: [3000, 3000], 64: [2500, 2500], 128: [2300, 2300], 256: [3900, 2100],
                   512: [3900, 2000]})
    chosen = _size_by_table(one_thread, pool)
    assert chosen.max_batch_size == 512  # one pass alone would have set 128
    assert chosen.both[512] == (3900, 2000) and chosen.both[128] == (3900, 2300)


def test_the_limit_is_the_smallest_size_near_the_cheapest(timed_by_line: list[tuple[Line, int]]) -> None:
    # 256 rows are within the tolerance of the cheapest (512): the extra rows would only add latency
    almost_flat = Table({32: 3000, 64: 2600, 128: 2300, 256: 2010, 512: 2000})
    chosen = _size_by_table(almost_flat)
    assert chosen.max_batch_size == 256


def test_growth_follows_the_faster_session(timed_by_line: list[tuple[Line, int]]) -> None:
    """One thread flattens at 32 rows; the pool keeps getting cheaper: the pool's figures raise the limit."""
    flat, pool = Line(0, 4 * US), Line(100 * US, 2 * US)
    assert _size(flat, None).max_batch_size == 32
    assert _size(flat, pool).max_batch_size == LARGEST_DEFAULT_ROWS


def test_a_configured_limit_is_kept(timed_by_line: list[tuple[Line, int]]) -> None:
    narrow, wide = Line(10 * US, 4 * US), Line(60 * US, 2 * US)
    chosen = _size(narrow, wide, 64, grow=False)
    assert chosen.max_batch_size == 64 and set(chosen.both) == {16, 32, 64}
    assert max(rows for _, rows in timed_by_line) == 64
    assert _size(narrow, None, 64, grow=False) == sizing.Sizing(64)  # nothing to choose: nothing timed


def test_the_timing_budget_stops_a_slow_model(timed_by_line: list[tuple[Line, int]]) -> None:
    chosen = _size(Line(1_000 * US, 40_000 * US), None)  # ResNet50-like: 32 rows would take 1.3 s per run
    assert chosen == sizing.Sizing(32)
    assert timed_by_line == []


def test_nothing_is_timed_without_a_calibration(timed_by_line: list[tuple[Line, int]]) -> None:
    line = Line(10 * US, 4 * US)
    assert size_batches("m", line, line, SIGNATURE, {}, 32, grow=True,  # type: ignore[arg-type]
                        costs=BatchCosts()) == sizing.Sizing(32)
    assert timed_by_line == []


class Recording:
    """A session stand-in for ThreadChoice: records the batches it ran."""

    def __init__(self) -> None:
        self.rows: list[int] = []


def _timed_choice(one: Recording, pool: Recording, ns_per_batch: dict[int, int],
                  measured: dict[int, tuple[float, float]]) -> tuple[ThreadChoice, Callable[[int], None]]:
    """A ThreadChoice over the stand-ins, on a clock where each session's batch takes its set time."""
    now = [0]
    choice = ThreadChoice(one, pool, measured)  # type: ignore[arg-type]

    def run(rows: int) -> None:
        def call(session: Recording) -> None:
            session.rows.append(rows)
            now[0] += ns_per_batch[id(session)]
        choice.run(rows, call, lambda: now[0])

    return choice, run


def test_the_faster_session_runs_large_batches_and_the_other_is_tried_as_its_cost_allows() -> None:
    one, pool = Recording(), Recording()
    choice, run = _timed_choice(one, pool, {id(one): 2000, id(pool): 1000}, {8: (5.0, 1.0), 32: (50.0, 25.0)})
    run(8)  # under POOL_FROM_ROWS: always one thread, whatever was measured
    assert one.rows == [8] and pool.rows == []
    for _ in range(450):
        run(40)  # the 32-63 class: one thread takes twice the pool's time, so each of a try's two batches costs one
    assert one.rows.count(40) == 4  # tried every 2 * (2 - 1) / EXPLORE_COST = 200 batches, two batches a try
    summary = choice.summary()["32-63"]
    assert summary["runs_on"] == "pool"
    assert summary["pool_us_per_row"] < summary["one_thread_us_per_row"]

    close_one, close_pool = Recording(), Recording()
    _, run_close = _timed_choice(close_one, close_pool, {id(close_one): 1030, id(close_pool): 1000},
                                 {32: (25.75, 25.0)})
    for _ in range(10 * EXPLORE_EVERY):
        run_close(40)  # 3 % apart: a try costs little, so it comes every EXPLORE_EVERY batches
    assert close_one.rows.count(40) == 19  # ten tries, the last cut short by the end


def test_a_try_is_timed_once_the_tried_session_is_awake() -> None:
    one, pool = Recording(), Recording()
    now, last = [0], [one]

    def call(session: Recording) -> None:
        # the pool takes 1 us a batch back to back, but 3 us on its first batch after the other session ran
        # (its worker asleep), where one thread takes 2 us
        session.rows.append(64)
        now[0] += 2000 if session is one else 1000 if last[0] is pool else 3000
        last[0] = session

    choice = ThreadChoice(one, pool, {64: (2000 / 64, 3000 / 64)})  # type: ignore[arg-type]
    for _ in range(300):
        choice.run(64, call, lambda: now[0])
    # tried after 2 * (1.5 - 1) / EXPLORE_COST = 100 batches: the try's second batch, awake, wins the class
    assert choice.summary()["64-127"]["runs_on"] == "pool"
    assert len(pool.rows) > 150


def test_a_session_that_recovers_wins_its_batches_back_within_two_tries() -> None:
    one, pool = Recording(), Recording()
    # the pool's mean was left high (timed while other threads took its cores); now it runs twice as fast
    choice, run = _timed_choice(one, pool, {id(one): 2000, id(pool): 1000}, {32: (40.0, 100.0)})
    for _ in range(400):
        run(40)
    # tried after ~200 batches (2x slower by then: 100 -> 62.5), again 50 later (-> 44 < 50) and kept; smoothed
    # in like any run, the tries would have moved it to 85 and 73 and the pool would have run twice
    assert 140 <= len(pool.rows) <= 160
    assert choice.summary()["32-63"]["runs_on"] == "pool"


def test_a_mean_left_long_ago_is_tried_again_sooner_than_its_cost_spacing() -> None:
    one, pool = Recording(), Recording()
    # 10 ms batches: the pool's stale mean says 2.5x slower (a try every 150 batches); TRY_AFTER_NS comes first
    _, run = _timed_choice(one, pool, {id(one): 20_000_000, id(pool): 10_000_000}, {32: (500_000.0, 1_250_000.0)})
    for _ in range(4 * TRY_AFTER_NS // 20_000_000):
        run(40)
    # tried each time its mean was TRY_AFTER_NS old (1.25 -> 0.75 -> 0.5 -> 0.375 ms a row), then kept
    assert len(pool.rows) >= 8


def test_a_session_that_slows_down_loses_its_batches() -> None:
    one, pool = Recording(), Recording()
    now = [0]
    cost = {id(one): 3000, id(pool): 1000}  # ns per batch: the pool wins ...
    choice = ThreadChoice(one, pool, {})  # type: ignore[arg-type]

    def run() -> None:
        def call(session: Recording) -> None:
            session.rows.append(64)
            now[0] += cost[id(session)]
        choice.run(64, call, lambda: now[0])

    for _ in range(64):
        run()
    assert len(pool.rows) > len(one.rows)
    cost[id(pool)] = 9000  # ... until the other cores get busy
    before = len(one.rows)
    for _ in range(64):
        run()
    assert len(one.rows) - before > 40
