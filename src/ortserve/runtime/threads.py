"""Which session runs a batch of a small model kept on one intra-op thread: that one-thread session, or one on
ONNX Runtime's default thread pool (a thread per core) kept beside it.

Small batches always run on one thread: warmup keeps the one-thread session only when it wins at 1 and 8 rows
(the MLP 784-256-10: 18 us a row against 28-40 us on the pool of two). From POOL_FROM_ROWS rows on, the pool can
win by using the other cores (the MLP at 256 rows: 2.1 us a row against 3.7 on one thread), but only while those
cores are free: on a shared machine the second core's share comes and goes within minutes, and under load the
front end needs it. So the choice is measured as it runs, per batch size (by powers of two): each size runs on
the session with the lower running mean of time per row, and now and then on the other, so that its mean follows
the machine. A try is TRY_RUNS batches of the class on the tried session, the first untimed: a session's first
run after a spell off pays for waking it (the pool's sleeping worker, its weights out of cache; the MLP at 256
rows on an AVX2 EPYC: 7.0, 5.2, 4.5 and 4.3 us a row for the first four pool runs after 30 on one thread, 3.3-3.7
back to back, 6.0 on one thread), so timing a lone run kept every class on one thread. A try costs the difference
on each of its batches, so tries are spaced to cost about EXPLORE_COST of the class's time: every EXPLORE_EVERY
batches when the two are close, every 152 when one thread is 1.76x slower (a try every 16 batches took 5 % of the
pool's throughput). A try's time counts for half the mean of the session
tried, which is as old as its last try: smoothed in like any run, one try in 28 batches moved a pool mean left at
5.1 us a row (timed while eight threads stacked beside it) too little to win back its batches at 2.3; replacing
the mean let single lucky tries move the MLP's 16-63-row classes back and forth at c=32 (5 % fewer requests/s
over five rounds). And a mean older than
TRY_AFTER_NS is tried again whatever the spacing: a bulk call runs few batches of each size, so a class left on
one thread by a slow spell of the pool stayed there for tens of calls. Warmup's timings of both start the means.
"""

from __future__ import annotations

from collections.abc import Callable

import onnxruntime as ort

POOL_FROM_ROWS = 16
EXPLORE_EVERY = 8  # the most often the slower session is tried
EXPLORE_COST = 0.01
TRY_RUNS = 2  # a try's batches on the tried session: one to wake it, one timed
TRY_AFTER_NS = 200_000_000  # a mean this old is tried again, whatever the cost: the machine has moved since
_SMOOTHING = 0.2
_TRY_WEIGHT = 0.5  # not 1: one lucky try would then move a close class over for the batches it takes to move back
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
        self._since_try: dict[int, int] = {}  # batches by size class since the slower session was last tried
        self._tried_ns: dict[int, int] = {}  # when it was last tried (or the class first ran)
        self._woken: dict[int, int] = {}  # by size class: the session a try has woken, to time on the next batch
        for rows, pair in measured.items():
            if rows >= POOL_FROM_ROWS:
                self._per_row[size_class(rows)] = list(pair)

    def run(self, rows: int, call: Callable[[ort.InferenceSession], object], clock: Callable[[], int]) -> object:
        """`call` on the session chosen for a batch of `rows`, timed with `clock` (ns) to keep choosing well."""
        if rows < POOL_FROM_ROWS:
            return call(self._sessions[ONE_THREAD])
        size = size_class(rows)
        means = self._per_row.setdefault(size, [None, None])
        since = self._since_try[size] = self._since_try.get(size, 0) + 1
        start = clock()
        one, pool = means
        waking = False
        trying = self._woken.pop(size, None)
        if trying is not None:  # the second batch of a try: the tried session is awake now, and timed
            chosen = trying
        elif one is None or pool is None:
            chosen = ONE_THREAD if one is None else POOL
        else:
            chosen = POOL if pool < one else ONE_THREAD
            stale = start - self._tried_ns.setdefault(size, start) >= TRY_AFTER_NS
            if stale or since >= _try_every(min(one, pool), max(one, pool)):
                chosen, waking, self._since_try[size], self._tried_ns[size] = 1 - chosen, True, 0, start
                self._woken[size] = chosen
        result = call(self._sessions[chosen])
        if waking:
            return result
        per_row = (clock() - start) / rows
        mean = means[chosen]
        # a try's time weighs more than a run's: the tried mean is as old as the last try, the machine has moved
        weight = _SMOOTHING if trying is None else _TRY_WEIGHT
        means[chosen] = per_row if mean is None else mean + weight * (per_row - mean)
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


def _try_every(faster: float, slower: float) -> float:
    """Batches between tries of the slower session: each try costs `TRY_RUNS * (slower / faster - 1)` batches."""
    if faster <= 0:
        return EXPLORE_EVERY
    return max(EXPLORE_EVERY, TRY_RUNS * (slower / faster - 1) / EXPLORE_COST)
