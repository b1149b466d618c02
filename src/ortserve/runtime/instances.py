"""A version's instances: sessions that run batches at once, with the cores divided among them, and the scaler
that moves their count within a configured range as the load rises and falls.

Dividing the cores: an instance gets `session.intra_op_threads` when it is set, else the usable cores divided by
the instance count (at least one), so that N instances never run more threads than there are cores. One
instance with no thread setting keeps ONNX Runtime's own default.

Scaling (`instances: {min, max}`) is measured, not assumed: every interval the scaler reads how busy the
instances were and how many rows they answered.
- Saturated (the instances busy nearly all the time, rows queued) for SATURATED_INTERVALS in a row: it adds an
  instance, then compares the throughput it reaches while still saturated with what it had. If one more
  instance did not raise throughput by TRIAL_GAIN (on CPUs an instance takes threads from the others, which
  helps small models and hurts large ones), it goes back and does not try again for a hold-off that doubles
  with each failed try.
- Idle enough that one instance fewer would stay under IDLE_UTILIZATION busy for IDLE_INTERVALS in a row: it
  removes one, down to the minimum.
Each change is logged, counted and listed in the version's statistics. Sessions are kept by thread count, so
moving back to a size used before builds nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import onnxruntime as ort

from ortserve.errors import OrtServeError
from ortserve.runtime.batcher import Batcher, Execute
from ortserve.runtime.cores import usable_cores, whole_machine
from ortserve.runtime.stats import ScalingEvent, VersionStats

log = logging.getLogger(__name__)

SATURATED_UTILIZATION = 0.9
SATURATED_INTERVALS = 2
TRIAL_GAIN = 0.05
IDLE_UTILIZATION = 0.6
IDLE_INTERVALS = 5
FIRST_HOLD_OFF_S = 30.0
LONGEST_HOLD_OFF_S = 600.0


def threads_per_instance(configured: int, count: int) -> int:
    """Intra-op threads for each of `count` instances; 0 leaves ONNX Runtime's default, which only one instance
    on the whole machine gets (runtime.cores: that default ignores the cores the process was given)."""
    if configured:
        return configured
    if count == 1 and whole_machine():
        return 0
    return max(1, usable_cores() // count)


class SessionPool:
    """Sessions of one model file by intra-op thread count, built on demand and kept for reuse."""

    def __init__(self, build: Callable[[int], ort.InferenceSession], configured_threads: int) -> None:
        self._build = build
        self._configured = configured_threads
        self._by_threads: dict[int, list[ort.InferenceSession]] = {}
        self._lock = threading.Lock()

    def sessions(self, count: int) -> list[ort.InferenceSession]:
        threads = threads_per_instance(self._configured, count)
        with self._lock:
            kept = self._by_threads.setdefault(threads, [])
        while len(kept) < count:  # built outside the lock: a large model takes seconds
            session = self._build(threads)
            with self._lock:
                kept.append(session)
        return kept[:count]

    def adopt(self, session: ort.InferenceSession, count: int = 1) -> None:
        """Keep an already built session as one of `count` instances' (the one loaded and warmed up first)."""
        with self._lock:
            self._by_threads.setdefault(threads_per_instance(self._configured, count), []).append(session)


@dataclass
class _Reading:
    """What one interval showed."""

    utilization: float  # share of the interval the instances were busy, averaged over instances
    rows_per_s: float
    queued_rows: int

    @property
    def saturated(self) -> bool:
        return self.utilization >= SATURATED_UTILIZATION and self.queued_rows > 0


@dataclass
class _Trial:
    """A scale-up on probation: the throughput it must beat."""

    previous: int
    baseline_rows_per_s: float
    readings: list[float] = field(default_factory=list)


class InstanceScaler:
    """Moves the batcher's instance count within [low, high]; `decide` is the policy, `run` its clock."""

    def __init__(self, batcher: Batcher, stats: VersionStats, build: Callable[[int], list[Execute]], *,
                 low: int, high: int, name: str, interval_s: float = 1.0) -> None:
        self._batcher = batcher
        self._stats = stats
        self._build = build
        self.low, self.high = low, high
        self.count = low
        self._name = name
        self._interval_s = interval_s
        self._saturated_run: list[float] = []
        self._idle_run = 0
        self._trial: _Trial | None = None
        self._settling = False  # the interval right after a change is not judged
        self._hold_off_s = FIRST_HOLD_OFF_S
        self._blocked_until = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{name}-scaler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join()

    def _run(self) -> None:
        state = self._batcher.state()
        busy_ns, rows, at = state.busy_ns, self._stats.inference_rows, time.perf_counter()
        while not self._stop.wait(self._interval_s):
            state = self._batcher.state()
            now, done_rows = time.perf_counter(), self._stats.inference_rows
            elapsed = now - at
            reading = _Reading((state.busy_ns - busy_ns) / 1e9 / elapsed / max(state.instances, 1),
                               (done_rows - rows) / elapsed, state.queued_rows)
            busy_ns, rows, at = state.busy_ns, done_rows, now
            wanted = self.decide(reading, time.monotonic())
            if wanted is not None:
                self._apply(*wanted)

    def decide(self, reading: _Reading, now: float) -> tuple[int, str] | None:
        """The instance count to move to, and why; None to stay. The interval right after a move is not judged."""
        if self._settling:
            self._settling = False
            return None
        wanted = self._choose(reading, now)
        self._settling = wanted is not None
        return wanted

    def _choose(self, reading: _Reading, now: float) -> tuple[int, str] | None:
        if self._trial is not None:
            return self._judge_trial(reading, now)
        if reading.saturated:
            self._idle_run = 0
            self._saturated_run.append(reading.rows_per_s)
            if (len(self._saturated_run) >= SATURATED_INTERVALS and self.count < self.high
                    and now >= self._blocked_until):
                baseline = sum(self._saturated_run) / len(self._saturated_run)
                self._trial = _Trial(self.count, baseline)
                return self.count + 1, (f"saturated ({reading.utilization:.0%} busy, {reading.queued_rows} rows "
                                        f"queued) at {baseline:.1f} rows/s: trying one instance more")
            return None
        self._saturated_run.clear()
        spare = reading.utilization * self.count / max(self.count - 1, 1)
        if self.count > self.low and spare < IDLE_UTILIZATION:
            self._idle_run += 1
            if self._idle_run >= IDLE_INTERVALS:
                self._idle_run = 0
                return self.count - 1, (f"idle ({reading.utilization:.0%} busy): one instance fewer would be "
                                        f"{spare:.0%} busy")
        else:
            self._idle_run = 0
        return None

    def _judge_trial(self, reading: _Reading, now: float) -> tuple[int, str] | None:
        trial = self._trial
        assert trial is not None
        if not reading.saturated:  # the extra instance absorbed the load: keep it
            self._trial = None
            self._hold_off_s = FIRST_HOLD_OFF_S
            return None
        trial.readings.append(reading.rows_per_s)
        if len(trial.readings) < SATURATED_INTERVALS:
            return None
        self._trial = None
        reached = sum(trial.readings) / len(trial.readings)
        if reached >= trial.baseline_rows_per_s * (1 + TRIAL_GAIN):
            self._hold_off_s = FIRST_HOLD_OFF_S
            self._saturated_run.clear()
            return None
        self._blocked_until = now + self._hold_off_s
        held = self._hold_off_s
        self._hold_off_s = min(self._hold_off_s * 2, LONGEST_HOLD_OFF_S)
        self._saturated_run.clear()
        return trial.previous, (f"{self.count} instances reached {reached:.1f} rows/s, not more than "
                                f"{trial.baseline_rows_per_s:.1f} with {trial.previous}: back, and no new try "
                                f"for {held:.0f} s")

    def _apply(self, count: int, reason: str) -> None:
        try:
            executes = self._build(count)
        except OrtServeError as exc:  # a session that cannot be built or warmed up: the current ones serve on
            log.error("%s: could not build %d instances (%s); staying at %d", self._name, count, exc, self.count)
            self._trial = None
            return
        self._batcher.set_instances(executes)
        log.info("%s: %d -> %d instances: %s", self._name, self.count, count, reason)
        self._stats.scaled(ScalingEvent(time.time(), self.count, count, reason))
        self.count = count
