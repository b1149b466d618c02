"""Instances: cores divided among them, and the scaler that moves their count with the load."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

import numpy as np
import pytest

from ortserve.runtime import instances
from ortserve.runtime.admission import Admission, AdmissionPolicy
from ortserve.runtime.batcher import Batcher
from ortserve.runtime.instances import InstanceScaler, _Reading, threads_per_instance
from ortserve.runtime.scheduler import BatchingPolicy, Scheduler
from ortserve.runtime.stats import VersionStats


def test_instances_divide_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(instances, "usable_cores", lambda: 8)
    monkeypatch.setattr(instances, "whole_machine", lambda: True)
    assert [threads_per_instance(0, count) for count in (1, 2, 3, 8, 16)] == [0, 4, 2, 1, 1]
    assert threads_per_instance(3, 2) == 3  # a configured count is kept


def test_a_process_given_part_of_the_machine_sets_its_thread_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """ONNX Runtime's default pool would take a thread per core of the machine, pinned to each."""
    monkeypatch.setattr(instances, "usable_cores", lambda: 3)
    monkeypatch.setattr(instances, "whole_machine", lambda: False)
    assert [threads_per_instance(0, count) for count in (1, 2, 4)] == [3, 1, 1]
    assert threads_per_instance(2, 1) == 2


def _scaler(low: int = 1, high: int = 3) -> InstanceScaler:
    return InstanceScaler(batcher=None, stats=VersionStats(), build=lambda count: [], low=low, high=high,  # type: ignore[arg-type]
                          name="test")


BUSY, IDLE = _Reading(0.97, 100.0, 4), _Reading(0.1, 10.0, 0)


def test_saturation_adds_an_instance_that_stays_when_it_pays() -> None:
    scaler = _scaler()
    assert scaler.decide(BUSY, 0) is None
    count, reason = scaler.decide(BUSY, 1)
    assert count == 2 and "saturated" in reason
    scaler.count = 2
    assert scaler.decide(_Reading(0.97, 150.0, 4), 2) is None  # the interval after a change is not judged
    assert scaler.decide(_Reading(0.97, 150.0, 4), 3) is None
    assert scaler.decide(_Reading(0.97, 150.0, 4), 4) is None  # 150 rows/s > 100: kept


def test_an_instance_that_does_not_pay_is_removed_and_not_tried_again_for_a_while() -> None:
    scaler = _scaler()
    scaler.decide(BUSY, 0)
    assert scaler.decide(BUSY, 1)[0] == 2
    scaler.count = 2
    scaler.decide(BUSY, 2)
    scaler.decide(BUSY, 3)
    count, reason = scaler.decide(BUSY, 4)
    assert count == 1 and "not more than" in reason
    scaler.count = 1
    for now in range(5, 20):
        assert scaler.decide(BUSY, now) is None  # held off for 30 s
    assert scaler.decide(BUSY, 40)[0] == 2


def test_idle_intervals_remove_instances_down_to_the_minimum() -> None:
    scaler = _scaler(low=1, high=3)
    scaler.count = 3
    decisions = [scaler.decide(IDLE, now) for now in range(5)]
    assert decisions[:4] == [None] * 4 and decisions[4][0] == 2
    scaler.count = 1
    assert all(scaler.decide(IDLE, now) is None for now in range(10))


class Sleeper:
    """A synthetic slow model: each batch takes 20 ms of wall time and no CPU, so instances truly add up."""

    def __init__(self) -> None:
        self.batches = 0

    def __call__(self, inputs):
        time.sleep(0.02)
        self.batches += 1
        return {"y": inputs["x"]}


def test_the_scaler_follows_the_load_up_and_down() -> None:
    stats = VersionStats()
    batcher = Batcher([Sleeper()], stats, name="test", scheduler=Scheduler(BatchingPolicy(1, 0)),
                      admission=Admission(AdmissionPolicy()))
    scaler = InstanceScaler(batcher, stats, lambda count: [Sleeper() for _ in range(count)], low=1, high=2,
                            name="test", interval_s=0.1)
    scaler.start()
    stop = threading.Event()

    def caller() -> None:
        while not stop.is_set():
            future: Future = Future()
            batcher.submit({"x": np.ones((1, 2), np.float32)}, 1, (2,), future.set_result, time.perf_counter_ns())
            future.result(timeout=30)

    callers = [threading.Thread(target=caller) for _ in range(6)]
    for thread in callers:
        thread.start()
    deadline = time.monotonic() + 20
    while batcher.state().instances < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert batcher.state().instances == 2, list(stats.scalings)
    time.sleep(0.6)  # the trial: two sleeping instances answer twice as many rows, so the second one stays
    assert batcher.state().instances == 2, list(stats.scalings)
    stop.set()
    for thread in callers:
        thread.join()
    while batcher.state().instances > 1 and time.monotonic() < deadline + 10:
        time.sleep(0.05)
    scaler.stop()
    batcher.close()
    assert [(event.instances_from, event.instances_to) for event in stats.scalings] == [(1, 2), (2, 1)]
    assert "idle" in stats.scalings[-1].reason
