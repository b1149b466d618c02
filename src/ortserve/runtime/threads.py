"""Which session runs a batch of a small model kept on one intra-op thread: that one-thread session, or one on
ONNX Runtime's default thread pool (a thread per core) kept beside it.

Small batches always run on one thread: warmup keeps the one-thread session only when it wins at 1 and 8 rows
(the MLP 784-256-10: 18 us a row against 28-40 us on the pool of two). From POOL_FROM_ROWS rows on, the pool can
win by using the other cores (the MLP at 64 rows: 150 us against 240 us), but only while those cores are free:
on a shared machine the second core's share comes and goes (the same run measured 150, 220 and 270 us within
minutes), and under load the front end needs it. So the choice is measured as it runs, per batch size (by
powers of two): each size runs on the session with the lower running mean of time per row, and one batch in
EXPLORE_EVERY on the other, so that its mean follows the machine. Warmup's timings of both start the means.
"""

from __future__ import annotations

from collections.abc import Callable

import onnxruntime as ort

POOL_FROM_ROWS = 16
EXPLORE_EVERY = 16
_SMOOTHING = 0.2
ONE_THREAD, POOL = 0, 1


def size_class(rows: int) -> int:
    """Batch sizes share a running mean within a power of two: 16-31 rows, 32-63, ..."""
    return 1 << (rows.bit_length() - 1)


class ThreadChoice:
    """Not thread-safe: an instance runs one batch at a time, and each instance has its own."""

    def __init__(self, one_thread: ort.InferenceSession, pool: ort.InferenceSession,
                 measured: dict[int, tuple[float, float]]) -> None:
        """`measured`: warmup's time per row in ns by batch rows, (one thread, pool)."""
        self._sessions = (one_thread, pool)
        self._per_row: dict[int, list[float | None]] = {}
        self._runs: dict[int, int] = {}
        for rows, pair in measured.items():
            if rows >= POOL_FROM_ROWS:
                self._per_row[size_class(rows)] = list(pair)

    def run(self, rows: int, call: Callable[[ort.InferenceSession], object], clock: Callable[[], int]) -> object:
        """`call` on the session chosen for a batch of `rows`, timed with `clock` (ns) to keep choosing well."""
        if rows < POOL_FROM_ROWS:
            return call(self._sessions[ONE_THREAD])
        size = size_class(rows)
        means = self._per_row.setdefault(size, [None, None])
        runs = self._runs[size] = self._runs.get(size, 0) + 1
        if means[ONE_THREAD] is None or means[POOL] is None:
            chosen = ONE_THREAD if means[ONE_THREAD] is None else POOL
        else:
            chosen = POOL if means[POOL] < means[ONE_THREAD] else ONE_THREAD
            if runs % EXPLORE_EVERY == 0:
                chosen = 1 - chosen
        start = clock()
        result = call(self._sessions[chosen])
        per_row = (clock() - start) / rows
        mean = means[chosen]
        means[chosen] = per_row if mean is None else mean + _SMOOTHING * (per_row - mean)
        return result

    def summary(self) -> dict[str, dict[str, float | str | None]]:
        """By size class: the session that runs it now, and both running means in us per row."""
        summary: dict[str, dict[str, float | str | None]] = {}
        for size, (one, pool) in sorted(self._per_row.items()):
            runs_on = "pool" if one is not None and pool is not None and pool < one else "one thread"
            summary[f"{size}-{2 * size - 1}"] = {
                "runs_on": runs_on,
                "one_thread_us_per_row": None if one is None else round(one / 1e3, 3),
                "pool_us_per_row": None if pool is None else round(pool / 1e3, 3)}
        return summary
