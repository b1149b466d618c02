"""Batch sizing at warmup (runtime.sizing), on sessions whose run times are known: the timing is replaced by a
cost line per session, so the choices are the function's alone."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from ortserve.dtypes import from_onnx
from ortserve.runtime import sizing
from ortserve.runtime.costs import BatchCosts
from ortserve.runtime.signature import Signature, TensorSpec
from ortserve.runtime.sizing import LARGEST_DEFAULT_ROWS, size_batches

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


def test_large_batches_move_to_the_thread_pool_where_it_wins(timed_by_line: list[tuple[Line, int]]) -> None:
    narrow, wide = Line(10 * US, 4 * US), Line(60 * US, 2 * US)  # the pool wins from 26 rows
    chosen = _size(narrow, wide)
    assert chosen.wide_from_rows == 32
    # rows keep getting cheaper on the pool by more than the doubling gain all the way up
    assert chosen.max_batch_size == LARGEST_DEFAULT_ROWS
    # once the pool won, only the pool is timed
    assert [(session is wide, rows) for session, rows in timed_by_line if rows > 32] == [
        (True, 64), (True, 128), (True, 256), (True, 512)]


def test_a_model_whose_rows_cost_the_same_keeps_the_default(timed_by_line: list[tuple[Line, int]]) -> None:
    chosen = _size(Line(5 * US, 100 * US), None)
    assert chosen == sizing.Sizing(32, 0)
    assert [rows for _, rows in timed_by_line] == [32, 64]  # 64 was timed and did not pay


def test_the_pool_that_never_wins_is_dropped(timed_by_line: list[tuple[Line, int]]) -> None:
    chosen = _size(Line(10 * US, 2 * US), Line(60 * US, 2 * US))
    assert chosen.wide_from_rows == 0


def test_a_configured_limit_is_kept(timed_by_line: list[tuple[Line, int]]) -> None:
    narrow, wide = Line(10 * US, 4 * US), Line(60 * US, 2 * US)
    chosen = _size(narrow, wide, 64, grow=False)
    assert chosen == sizing.Sizing(64, 32)
    assert max(rows for _, rows in timed_by_line) == 64
    assert _size(narrow, None, 64, grow=False) == sizing.Sizing(64, 0)  # nothing to choose: nothing timed


def test_the_timing_budget_stops_a_slow_model(timed_by_line: list[tuple[Line, int]]) -> None:
    chosen = _size(Line(1_000 * US, 40_000 * US), None)  # ResNet50-like: 32 rows would take 1.3 s per run
    assert chosen == sizing.Sizing(32, 0)
    assert timed_by_line == []


def test_nothing_is_timed_without_a_calibration(timed_by_line: list[tuple[Line, int]]) -> None:
    line = Line(10 * US, 4 * US)
    assert size_batches("m", line, line, SIGNATURE, {}, 32, grow=True,  # type: ignore[arg-type]
                        costs=BatchCosts()) == sizing.Sizing(32, 0)
    assert timed_by_line == []
