"""The batcher on its own: merging by rows, limits, shape keys, preferred sizes, per-request errors."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from ortserve.runtime.batcher import Batcher, Tensors
from ortserve.runtime.stats import VersionStats
from ortserve.runtime.worker import Worker


class Recorder:
    """execute() that doubles its input and records the batch sizes it was given."""

    def __init__(self, fail_on: float | None = None) -> None:
        self.batches: list[int] = []
        self.fail_on = fail_on

    def __call__(self, inputs: Tensors) -> Tensors:
        x = inputs["x"]
        self.batches.append(x.shape[0])
        if self.fail_on is not None and (x == self.fail_on).any():
            raise ValueError("poisoned row")
        return {"y": x * 2}


async def _run(recorder: Recorder, requests: list[np.ndarray], **options) -> list[Tensors | BaseException]:
    worker = Worker("test")
    settings = {"max_batch_size": 8, "max_queue_delay_us": 50_000, "preferred_batch_sizes": []} | options
    batcher = Batcher(recorder, worker, VersionStats(), **settings)
    futures = [batcher.submit({"x": x}, x.shape[0], x.shape[1:]) for x in requests]
    try:
        return await asyncio.gather(*futures, return_exceptions=True)
    finally:
        worker.close()


def _rows(count: int, width: int = 3, value: float = 1.0) -> np.ndarray:
    return np.full((count, width), value, np.float32)


def test_rows_merge_and_split_back() -> None:
    recorder = Recorder()
    requests = [_rows(1, value=1), _rows(2, value=2), _rows(3, value=3)]
    results = asyncio.run(_run(recorder, requests))
    assert recorder.batches == [6]
    for request, result in zip(requests, results, strict=True):
        np.testing.assert_array_equal(result["y"], request * 2)


def test_batches_never_exceed_max_batch_size() -> None:
    recorder = Recorder()
    asyncio.run(_run(recorder, [_rows(3) for _ in range(5)], max_batch_size=7))
    assert all(size <= 7 for size in recorder.batches)
    assert sum(recorder.batches) == 15


def test_requests_with_other_non_batch_shapes_do_not_merge() -> None:
    recorder = Recorder()
    results = asyncio.run(_run(recorder, [_rows(1, 3), _rows(1, 4), _rows(1, 3), _rows(2, 4)]))
    assert sorted(recorder.batches) == [2, 3]
    assert [r["y"].shape for r in results] == [(1, 3), (1, 4), (1, 3), (2, 4)]


def test_one_failing_request_does_not_fail_the_others() -> None:
    recorder = Recorder(fail_on=-1)
    results = asyncio.run(_run(recorder, [_rows(1), _rows(1, value=-1), _rows(2)]))
    assert isinstance(results[1], ValueError)
    np.testing.assert_array_equal(results[0]["y"], _rows(1) * 2)
    np.testing.assert_array_equal(results[2]["y"], _rows(2) * 2)


def test_zero_delay_runs_the_first_request_at_once() -> None:
    async def scenario() -> list[int]:
        recorder = Recorder()
        worker = Worker("test")
        batcher = Batcher(recorder, worker, VersionStats(), max_batch_size=8, max_queue_delay_us=0,
                          preferred_batch_sizes=[])
        first = batcher.submit({"x": _rows(1)}, 1, (3,))
        await asyncio.sleep(0.05)  # the first one runs alone; these three queue together behind nothing
        rest = [batcher.submit({"x": _rows(1)}, 1, (3,)) for _ in range(3)]
        await asyncio.gather(first, *rest)
        worker.close()
        return recorder.batches

    assert asyncio.run(scenario()) == [1, 3]


def test_preferred_batch_size_dispatches_without_waiting() -> None:
    async def scenario() -> float:
        worker = Worker("test")
        batcher = Batcher(Recorder(), worker, VersionStats(), max_batch_size=16, max_queue_delay_us=5_000_000,
                          preferred_batch_sizes=[4])
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.gather(*[batcher.submit({"x": _rows(2)}, 2, (3,)) for _ in range(2)])
        worker.close()
        return loop.time() - start

    assert asyncio.run(scenario()) < 1.0  # far below the 5 s queue delay


def test_unbatched_model_runs_requests_one_by_one() -> None:
    recorder = Recorder()
    asyncio.run(_run(recorder, [_rows(2), _rows(2)], max_batch_size=0))
    assert recorder.batches == [2, 2]


@pytest.mark.parametrize("delay_us", [0, 100, 20_000])
def test_every_request_is_answered_under_load(delay_us: int) -> None:
    recorder = Recorder()
    requests = [_rows(1 + i % 3, value=i) for i in range(200)]
    results = asyncio.run(_run(recorder, requests, max_queue_delay_us=delay_us))
    for request, result in zip(requests, results, strict=True):
        np.testing.assert_array_equal(result["y"], request * 2)
    assert sum(recorder.batches) == sum(r.shape[0] for r in requests)


def test_close_drains_queued_requests_then_stops_the_worker() -> None:
    async def scenario() -> tuple[list[int], bool]:
        recorder = Recorder()
        worker = Worker("test")
        batcher = Batcher(recorder, worker, VersionStats(), max_batch_size=2, max_queue_delay_us=0,
                          preferred_batch_sizes=[])
        futures = [batcher.submit({"x": _rows(1)}, 1, (3,)) for _ in range(5)]
        batcher.close()
        results = await asyncio.gather(*futures)
        await asyncio.sleep(0.05)
        return [len(r["y"]) for r in results], worker._thread.is_alive()

    answered, alive = asyncio.run(scenario())
    assert answered == [1] * 5
    assert not alive
