"""The load of `ortserve bench`: several worker processes (so that the generator's own Python is not the limit),
each with sender threads, in a closed loop (a number of callers, each sending when answered) or an open loop
(sends at a Poisson rate whatever the answers do). Each process measures its own processor time, so a report
can say when the generator itself was saturated."""

from __future__ import annotations

import multiprocessing
import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ortserve.bench.targets import Request, Sender

LATE_NS = 10_000_000  # an open-loop send that leaves this much after its time counts as late
_START_DELAY_S = 0.2  # lets every started process reach its first send


@dataclass
class Load:
    duration_s: float
    warmup_s: float
    timeout_s: float
    processes: int


@dataclass
class Measured:
    """What one load point gave, over the measured window (after the warmup)."""

    window_s: float
    latencies_ns: np.ndarray  # of answers that succeeded
    codes: Counter[str] = field(default_factory=Counter)  # every outcome, OK included
    generator_cpu_s: float = 0.0
    busiest_process_cpu_share: float = 0.0  # of one core: near 1, that process was the limit
    late_sends: int = 0  # open loop: sends that left late (the generator fell behind its schedule)


@dataclass
class _Part:
    latencies_ns: list[int]
    codes: Counter[str]
    cpu_s: float
    late: int


def closed_loop(request: Request, concurrency: int, load: Load) -> Measured:
    """`concurrency` callers, spread over the worker processes, each sending its next request when answered."""
    processes = max(1, min(load.processes, concurrency))
    shares = [concurrency // processes + (1 if index < concurrency % processes else 0) for index in range(processes)]
    return _gather(load, [share for share in shares if share],
                   lambda share, start_at: (_closed_part, (request, share, start_at, load)))


def open_loop(request: Request, rate: float, load: Load, outstanding: int = 64) -> Measured:
    """Sends at `rate` per second in all (a Poisson process per worker), each process with up to `outstanding`
    requests in flight; a send whose sender threads are all busy waits, and counts as late past LATE_NS."""
    processes = max(1, load.processes)
    return _gather(load, list(range(processes)),
                   lambda index, start_at: (_open_part, (request, rate / processes, start_at, load, outstanding,
                                                         index)))


def _gather(load: Load, shares: list[int], part: Callable[[int, float], tuple[Callable[..., _Part], tuple]]
            ) -> Measured:
    # spawn, not fork: the parent has used gRPC (metadata) and runs a progress thread, neither safe across a fork
    with ProcessPoolExecutor(len(shares), mp_context=multiprocessing.get_context("spawn")) as pool:
        for ready in [pool.submit(_ready) for _ in shares]:  # every process started and imported before the clock
            ready.result()
        start_at = time.time() + _START_DELAY_S
        futures = [pool.submit(function, *arguments) for function, arguments in (part(share, start_at)
                                                                                 for share in shares)]
        results: list[_Part] = [future.result() for future in futures]
    codes: Counter[str] = Counter()
    for result in results:
        codes.update(result.codes)
    latencies = np.fromiter((ns for result in results for ns in result.latencies_ns), np.int64)
    return Measured(load.duration_s, latencies, codes, sum(result.cpu_s for result in results),
                    max(result.cpu_s for result in results) / load.duration_s, sum(result.late for result in results))


def _ready() -> None:
    """Nothing: the first task a worker process runs, once its imports are done."""


def _wait_until(moment: float) -> None:
    delay = moment - time.time()
    if delay > 0:
        time.sleep(delay)


def _closed_part(request: Request, callers: int, start_at: float, load: Load) -> _Part:
    measure_from = start_at + load.warmup_s
    stop_at = measure_from + load.duration_s
    latencies: list[int] = []
    codes: Counter[str] = Counter()
    lock = threading.Lock()

    def caller() -> None:
        sender = Sender(request, load.timeout_s)
        mine: list[int] = []
        outcomes: Counter[str] = Counter()
        _wait_until(start_at)
        try:
            while (now := time.time()) < stop_at:
                began = time.perf_counter_ns()
                outcome = sender.send()
                took = time.perf_counter_ns() - began
                if now >= measure_from:
                    outcomes[outcome] += 1
                    if outcome == "OK":
                        mine.append(took)
        finally:
            sender.close()
        with lock:
            latencies.extend(mine)
            codes.update(outcomes)

    return _run_threads(caller, callers, measure_from, stop_at, latencies, codes, lambda: 0)


def _open_part(request: Request, rate: float, start_at: float, load: Load, outstanding: int, seed: int) -> _Part:
    measure_from = start_at + load.warmup_s
    stop_at = measure_from + load.duration_s
    due: queue.SimpleQueue[int | None] = queue.SimpleQueue()  # each send's scheduled time, perf_counter_ns
    latencies: list[int] = []
    codes: Counter[str] = Counter()
    late = [0]
    lock = threading.Lock()
    measure_from_ns = time.perf_counter_ns() + int((measure_from - time.time()) * 1e9)

    def sender_thread() -> None:
        sender = Sender(request, load.timeout_s)
        mine: list[int] = []
        outcomes: Counter[str] = Counter()
        behind = 0
        try:
            while (scheduled := due.get()) is not None:
                began = time.perf_counter_ns()
                outcome = sender.send()
                if scheduled >= measure_from_ns:
                    outcomes[outcome] += 1
                    behind += began - scheduled > LATE_NS
                    if outcome == "OK":  # from when it was due: time spent waiting for a sender counts
                        mine.append(time.perf_counter_ns() - scheduled)
        finally:
            sender.close()
        with lock:
            latencies.extend(mine)
            codes.update(outcomes)
            late[0] += behind

    def schedule() -> None:
        rng = random.Random(seed)
        _wait_until(start_at)
        moment = time.perf_counter_ns()
        end = moment + int((stop_at - time.time()) * 1e9)
        while moment < end:
            delay = moment - time.perf_counter_ns()
            if delay > 0:
                time.sleep(delay / 1e9)
            due.put(moment)
            moment += int(rng.expovariate(rate) * 1e9)
        for _ in range(outstanding):
            due.put(None)

    scheduler = threading.Thread(target=schedule)
    scheduler.start()
    part = _run_threads(sender_thread, outstanding, measure_from, stop_at, latencies, codes, lambda: late[0])
    scheduler.join()
    return part


def _run_threads(target: object, count: int, measure_from: float, stop_at: float, latencies: list[int],
                 codes: Counter[str], late: object) -> _Part:
    """Run `count` threads of `target`; the process's processor time over the measured window."""
    threads = [threading.Thread(target=target) for _ in range(count)]  # type: ignore[arg-type]
    for thread in threads:
        thread.start()
    _wait_until(measure_from)
    cpu_start = time.process_time()
    _wait_until(stop_at)
    cpu_s = time.process_time() - cpu_start
    for thread in threads:
        thread.join()
    return _Part(latencies, codes, cpu_s, late())  # type: ignore[operator]
