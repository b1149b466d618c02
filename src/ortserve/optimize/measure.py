"""In-process latency and throughput of one model file under given session options."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from pydantic import ValidationError

from ortserve.errors import InvalidInput
from ortserve.optimize.data import Samples
from ortserve.repository.config import SessionOptions
from ortserve.runtime.ort_guard import unsafe_optimizers
from ortserve.runtime.session import session_options


def session_config(threads: int, execution_mode: str) -> SessionOptions:
    """config.yaml's `session:` with these threads and execution mode, checked as the server checks it."""
    try:
        return SessionOptions(intra_op_threads=threads, execution_mode=execution_mode)  # type: ignore[arg-type]
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        raise InvalidInput(f"invalid session setting {error['loc'][0]}={error['input']!r}: {error['msg']}") from None


def open_session(path: Path, threads: int = 0, execution_mode: str = "sequential") -> ort.InferenceSession:
    """A CPU session with the options the server builds from that `session:` (so tune measures what is served)."""
    options = session_options(session_config(threads, execution_mode))
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"],
                                disabled_optimizers=unsafe_optimizers(path))


@dataclass(frozen=True)
class Timing:
    batch_size: int
    runs: int
    p50_ms: float
    p90_ms: float
    instances: int = 1  # sessions timed side by side, each on its own thread

    @property
    def rows_per_second(self) -> float:
        return self.instances * self.batch_size / self.p50_ms * 1000.0


def batch_of(samples: Samples, batch_size: int) -> dict[str, np.ndarray]:
    """`batch_size` rows, repeating the samples when there are fewer."""
    index = np.arange(batch_size) % len(samples)
    return {name: np.ascontiguousarray(array[index]) for name, array in samples.feeds.items()}


def latencies_ms(call: Callable[[], object], seconds: float, min_runs: int, max_runs: int) -> list[float]:
    for _ in range(2):
        call()
    latencies = []
    deadline = time.perf_counter() + seconds
    while len(latencies) < max_runs and (len(latencies) < min_runs or time.perf_counter() < deadline):
        started = time.perf_counter()
        call()
        latencies.append((time.perf_counter() - started) * 1000.0)
    return latencies


def time_runs(session: ort.InferenceSession, feed: dict[str, np.ndarray], seconds: float = 1.0,
              min_runs: int = 5, max_runs: int = 2000) -> Timing:
    """Warm up twice, then run until `seconds` passed (at least `min_runs` times); median and p90 latency."""
    return _timing(feed, [latencies_ms(lambda: session.run(None, feed), seconds, min_runs, max_runs)])


def timing_of(batch_size: int, latencies: list[float]) -> Timing:
    ordered = sorted(latencies)
    return Timing(batch_size, len(ordered), statistics.median(ordered),
                  ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))])


def time_instances(sessions: list[ort.InferenceSession], feed: dict[str, np.ndarray], seconds: float = 1.0,
                   min_runs: int = 5, max_runs: int = 2000) -> Timing:
    """time_runs for several sessions running side by side, each on a thread of its own (as the server's instances
    do: session.run releases the GIL): the latency of one run while the others run too."""
    if len(sessions) == 1:
        return time_runs(sessions[0], feed, seconds, min_runs, max_runs)
    with ThreadPoolExecutor(len(sessions)) as pool:
        per_session = list(pool.map(
            lambda session: latencies_ms(lambda: session.run(None, feed), seconds, min_runs, max_runs), sessions))
    return _timing(feed, per_session)


def _timing(feed: dict[str, np.ndarray], per_session: list[list[float]]) -> Timing:
    latencies = sorted(value for values in per_session for value in values)
    batch_size = len(next(iter(feed.values())))
    return Timing(batch_size, len(latencies), statistics.median(latencies),
                  latencies[min(len(latencies) - 1, int(0.9 * len(latencies)))], len(per_session))
