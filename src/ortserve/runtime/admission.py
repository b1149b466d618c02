"""Admission: refuse at once, before a queue slot or any compute, what cannot be served in time.

A request is refused (`Overloaded`: HTTP 503 with Retry-After, gRPC UNAVAILABLE) when
- the queue holds its bound in rows: `queue.max_rows`, or by default the rows the model is measured to run in
  `queue.max_wait_ms` (at least two full batches);
- its deadline (the gRPC deadline, the V2 `timeout` parameter) would pass before it is answered;
- it would be answered later than the model's `latency_slo_ms`.

"Answered" is predicted from the work ahead of the request (what is left of the running batches, and the rows
queued at the time per row the version measured while it had a backlog, or its batch cost line before that)
plus its own batch, times a correction learnt from how long admitted requests really took against what was
predicted for them: the TAIL_QUANTILE of that ratio over the last RECENT_ANSWERS, so that a request admitted at
the edge of its deadline (under overload, most are: the queue fills to that edge) is late about 1 time in 100.
A mean plus two mean deviations, used before, let 0.95-4.1 % of all requests sent to ResNet50 at 3x its capacity
end past their 2 s deadlines on a busy 2-core machine in four runs (up to 8.5 % of those admitted), most of them
answered late rather than dropped (the server dropped 0 of 64 and 20 of 90 in two runs): batches that ran slower
than predicted carried the requests admitted closest to their deadlines past them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ortserve.errors import Overloaded

MIN_BOUND_BATCHES = 2
_CALIBRATE_ABOVE_NS = 2_000_000  # shorter predictions are dominated by thread wake-ups, not by the queue
TAIL_QUANTILE = 0.99
RECENT_ANSWERS = 256  # admitted requests whose ratio of actual to predicted time the correction is taken from
_RECOMPUTE_EVERY = 16  # answers between recomputations of the quantile
_LEAST, _MOST = 0.5, 4.0


@dataclass(frozen=True)
class AdmissionPolicy:
    enabled: bool = True
    max_queue_rows: int | None = None  # None: derived from the measured speed and max_queue_wait_ns
    max_queue_wait_ns: int = 2_000_000_000
    latency_slo_ns: int | None = None


class Admission:
    """Not thread-safe: the batcher calls it under its lock."""

    def __init__(self, policy: AdmissionPolicy) -> None:
        self.policy = policy
        self._ratios = np.zeros(RECENT_ANSWERS)  # actual / predicted time to answer, a ring of the latest
        self._seen = 0
        self.correction = 1.0

    def queue_bound(self, row_ns: float, batch_rows: int) -> int | None:
        """Most rows the queue may hold, given the time the version takes per queued row; None: unbounded
        (admission off, or nothing measured yet and no bound set)."""
        if not self.policy.enabled:
            return None
        if self.policy.max_queue_rows is not None:
            return self.policy.max_queue_rows
        if row_ns <= 0:
            return None
        return max(int(self.policy.max_queue_wait_ns / row_ns), MIN_BOUND_BATCHES * max(batch_rows, 1))

    def admit(self, *, rows: int, queued_rows: int, bound: int | None, wait_ns: float, own_ns: float,
              deadline_left_ns: int | None) -> int:
        """The predicted time until the request is answered, in ns, before the correction (what `answered`
        takes back), or Overloaded naming why it is refused."""
        raw = wait_ns + own_ns
        predicted = raw * self.correction
        if not self.policy.enabled:
            return int(raw)
        retry_after_s = max(1.0, math.ceil(wait_ns / 1e9))
        if bound is not None and queued_rows + rows > bound and queued_rows > 0:
            raise Overloaded(f"the model is overloaded: its queue holds {queued_rows} rows, the most it takes is "
                             f"{bound}; retry later", retry_after_s, "queue_full")
        if deadline_left_ns is not None and predicted > deadline_left_ns:
            raise Overloaded(f"the model is overloaded: the request would be answered in about "
                             f"{predicted / 1e6:.0f} ms, after its deadline ({max(deadline_left_ns, 0) / 1e6:.0f} "
                             "ms left)", retry_after_s, "deadline")
        slo = self.policy.latency_slo_ns
        if slo is not None and predicted > slo and queued_rows > 0:
            raise Overloaded(f"the model is overloaded: the request would be answered in about "
                             f"{predicted / 1e6:.0f} ms, over its latency objective of {slo / 1e6:.0f} ms",
                             retry_after_s, "latency_slo")
        return int(raw)

    def answered(self, predicted_ns: int, actual_ns: int) -> None:
        """Learn from an admitted request: how long it took against its prediction (as `admit` returned it)."""
        if predicted_ns < _CALIBRATE_ABOVE_NS:
            return
        self._ratios[self._seen % RECENT_ANSWERS] = actual_ns / predicted_ns
        self._seen += 1
        if self._seen % _RECOMPUTE_EVERY == 0 or self._seen < _RECOMPUTE_EVERY:
            recent = self._ratios[:min(self._seen, RECENT_ANSWERS)]
            self.correction = min(max(float(np.quantile(recent, TAIL_QUANTILE)), _LEAST), _MOST)
