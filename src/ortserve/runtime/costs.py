"""What a batch costs: the measured run time of batches by their rows, and a straight line fitted through them.

On CPUs and GPUs alike a batch costs roughly a fixed part (reading weights, launching kernels, Python and
ONNX Runtime overhead) plus a part per row. The fixed part is what batching saves, so it decides how long a
batch is worth waiting for and how large it should grow (runtime.scheduler); the whole line predicts how long
queued work will take (runtime.admission).

What a batch costs changes with the load: on a machine whose cores the front end shares, a burst of thousands
of callers made the MLP's batches run 2-50x slower than when calm (waiting for the GIL and the cores), in batch
sizes the calm never sees again. So the line is fitted through two kinds of points:
- warmup's calibration (every size it timed, on an idle server): a prior that never ages, each size weighing
  PRIOR_WEIGHT, so it shapes the line only where serving measured nothing lately;
- what serving measures: each size's weight halves for every HALF_LIFE_NS it goes unmeasured, and a size
  unmeasured for FORGET_AFTER_NS is forgotten, unless it is one of the two measured last.
Before this, a burst's sizes kept the MLP's fixed cost at 2.4 ms (90 us calm) for as long as the server ran,
and with it the time batches waited (docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

_SMOOTHING = 0.1  # weight of the newest run in a batch size's running mean, once it has a few runs
_MOST_WEIGHT = 16  # runs beyond this do not make a batch size count more in the fit
HALF_LIFE_NS = 3_000_000_000
FORGET_AFTER_NS = 10 * HALF_LIFE_NS
STALE_WEIGHT = 0.5**10  # the least share of its weight a size keeps (one of the two kept however old)
PRIOR_WEIGHT = _MOST_WEIGHT * STALE_WEIGHT  # a calibrated size counts as much as one served long ago
REWEIGH_EVERY_NS = 1_000_000_000


@dataclass(slots=True)
class _SizeMean:
    ns: float = 0.0
    runs: int = 0
    seen_ns: int = 0  # when it was last measured
    weight: float = 0.0  # its weight in the sums now

    def weight_at(self, now_ns: int) -> float:
        decay = max(0.5 ** ((now_ns - self.seen_ns) / HALF_LIFE_NS), STALE_WEIGHT)
        return min(self.runs, _MOST_WEIGHT) * decay


class BatchCosts:
    """Running means of session.run time per batch size, and the line `fixed + per_row * rows` through them.

    What is measured before `age_with` is calibration (the prior above); what is measured after it ages by its
    clock. The least-squares sums are kept up to date as each mean moves, so an observation costs O(1): a small
    model runs thousands of batches a second; the weights are lowered once every REWEIGH_EVERY_NS.
    Not thread-safe: the batcher calls it under its lock.
    """

    def __init__(self) -> None:
        self._clock: Callable[[], int] | None = None  # None: calibrating
        self._reweighed_ns = 0
        self._prior: dict[int, float] = {}  # calibration: mean ns by rows
        self._by_rows: dict[int, _SizeMean] = {}
        # weighted sums over batch sizes x (rows) and their mean times y (ns)
        self._w = self._wx = self._wy = self._wxx = self._wxy = 0.0
        self.fixed_ns = 0.0
        self.per_row_ns = 0.0

    @property
    def measured(self) -> bool:
        return bool(self._by_rows or self._prior)

    @property
    def sizes(self) -> dict[int, float]:
        """Mean run time in ns of each batch size measured (served, else calibrated)."""
        served = {rows: mean.ns for rows, mean in self._by_rows.items()}
        return dict(sorted((self._prior | served).items()))

    def age_with(self, clock: Callable[[], int]) -> None:
        """What was measured so far becomes the calibration (the first time only: what serving measured never
        does); what is measured from now on ages by `clock` (ns)."""
        if self._clock is None:
            self._prior |= {rows: mean.ns for rows, mean in self._by_rows.items()}
            self._by_rows.clear()
        self._clock = clock
        self._reweigh(clock())
        if self.measured:
            self._fit()

    def observe(self, rows: int, ns: int) -> None:
        rows = max(rows, 1)
        now = 0 if self._clock is None else self._clock()
        if now - self._reweighed_ns >= REWEIGH_EVERY_NS:
            self._reweigh(now)
        mean = self._by_rows.get(rows)
        if mean is None:
            mean = self._by_rows[rows] = _SizeMean()
        self._account(rows, mean.ns, -mean.weight)
        mean.runs += 1
        mean.ns += max(_SMOOTHING, 1.0 / mean.runs) * (ns - mean.ns)
        mean.seen_ns = now
        mean.weight = mean.weight_at(now)
        self._account(rows, mean.ns, mean.weight)
        self._fit()

    def cost_ns(self, rows: int) -> float:
        """Expected run time of a batch of `rows` (0 until anything was measured)."""
        return self.fixed_ns + self.per_row_ns * max(rows, 1)

    def _reweigh(self, now_ns: int) -> None:
        """Each served size weighed by how lately it was measured, the long unmeasured forgotten; the sums summed
        again (no drift from updates)."""
        self._reweighed_ns = now_ns
        by_age = sorted(self._by_rows.items(), key=lambda item: item[1].seen_ns)
        for rows, mean in by_age[:-2]:
            if now_ns - mean.seen_ns >= FORGET_AFTER_NS:
                del self._by_rows[rows]
        self._w = self._wx = self._wy = self._wxx = self._wxy = 0.0
        for rows, ns in self._prior.items():
            self._account(rows, ns, PRIOR_WEIGHT)
        for rows, mean in self._by_rows.items():
            mean.weight = mean.weight_at(now_ns)
            self._account(rows, mean.ns, mean.weight)

    def _account(self, rows: int, ns: float, weight: float) -> None:
        self._w += weight
        self._wx += weight * rows
        self._wy += weight * ns
        self._wxx += weight * rows * rows
        self._wxy += weight * rows * ns

    def _fit(self) -> None:
        mean_x, mean_y = self._wx / self._w, self._wy / self._w
        spread = self._wxx / self._w - mean_x * mean_x
        if len(self._by_rows) + len(self._prior) < 2 or spread <= 1e-9:
            # one batch size seen: no way to tell fixed from per-row cost; assume it is all per row
            self.fixed_ns, self.per_row_ns = 0.0, mean_y / mean_x
            return
        slope = (self._wxy / self._w - mean_x * mean_y) / spread
        intercept = mean_y - slope * mean_x
        if slope < 0:  # noise: bigger batches looked cheaper; all of it is fixed
            self.fixed_ns, self.per_row_ns = mean_y, 0.0
        elif intercept < 0:  # noise the other way: no fixed part, the line through the origin
            self.fixed_ns, self.per_row_ns = 0.0, (self._wxy / self._w) / (self._wxx / self._w)
        else:
            self.fixed_ns, self.per_row_ns = intercept, slope
