"""What a batch costs: the measured run time of batches by their rows, and a straight line fitted through them.

On CPUs and GPUs alike a batch costs roughly a fixed part (reading weights, launching kernels, Python and
ONNX Runtime overhead) plus a part per row. The fixed part is what batching saves, so it decides how long a
batch is worth waiting for and how large it should grow (runtime.scheduler); the whole line predicts how long
queued work will take (runtime.admission).
"""

from __future__ import annotations

from dataclasses import dataclass

_SMOOTHING = 0.1  # weight of the newest run in a batch size's running mean, once it has a few runs
_MOST_WEIGHT = 16  # runs beyond this do not make a batch size count more in the fit


@dataclass(slots=True)
class _SizeMean:
    ns: float = 0.0
    runs: int = 0

    @property
    def weight(self) -> float:
        return float(min(self.runs, _MOST_WEIGHT))


class BatchCosts:
    """Running means of session.run time per batch size, and the line `fixed + per_row * rows` through them.

    The least-squares sums are kept up to date as each mean moves, so an observation costs O(1): a small model
    runs thousands of batches a second. Not thread-safe: the batcher calls it under its lock.
    """

    def __init__(self) -> None:
        self._by_rows: dict[int, _SizeMean] = {}
        # weighted sums over batch sizes x (rows) and their mean times y (ns)
        self._w = self._wx = self._wy = self._wxx = self._wxy = 0.0
        self.fixed_ns = 0.0
        self.per_row_ns = 0.0

    @property
    def measured(self) -> bool:
        return bool(self._by_rows)

    @property
    def sizes(self) -> dict[int, float]:
        """Mean run time in ns of each batch size seen."""
        return {rows: mean.ns for rows, mean in sorted(self._by_rows.items())}

    def observe(self, rows: int, ns: int) -> None:
        rows = max(rows, 1)
        mean = self._by_rows.get(rows)
        if mean is None:
            mean = self._by_rows[rows] = _SizeMean()
        self._account(rows, mean, -1.0)
        mean.runs += 1
        mean.ns += max(_SMOOTHING, 1.0 / mean.runs) * (ns - mean.ns)
        self._account(rows, mean, 1.0)
        self._fit()

    def cost_ns(self, rows: int) -> float:
        """Expected run time of a batch of `rows` (0 until anything was measured)."""
        return self.fixed_ns + self.per_row_ns * max(rows, 1)

    def _account(self, rows: int, mean: _SizeMean, sign: float) -> None:
        w = sign * mean.weight
        self._w += w
        self._wx += w * rows
        self._wy += w * mean.ns
        self._wxx += w * rows * rows
        self._wxy += w * rows * mean.ns

    def _fit(self) -> None:
        mean_x, mean_y = self._wx / self._w, self._wy / self._w
        spread = self._wxx / self._w - mean_x * mean_x
        if len(self._by_rows) < 2 or spread <= 1e-9:
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
