"""Shadow traffic: a copy of a fraction of a model's requests runs on another version after each caller has been
answered, and the answers are compared (routing.agreement), never returned.

The copies run on one thread of the lowest scheduling priority (SCHED_IDLE), on a session of the shadow version of their
own with one intra-op thread, so that all their compute is on that thread: when the served versions need the
cores, the operating system gives them the cores, the copies wait, and those that do not fit in a short queue
are dropped. Priority does not cover all they share, though: the shadow's Python work holds the GIL that a
small model's whole request path needs, and a large shadow model's weights pass through the caches the served
one uses. Measured on the MLP at c=8 (docs/benchmarks.md), priority alone let a shadow of the same model cost
55 % of the throughput. So while requests are being answered, the shadow also keeps to a duty cycle: after each
copy that ran while the served versions answered others, it pauses for long enough that its copies' processor
time stays within `routing.shadow.max_share` of the time. On an idle server it compares every copy; under load
it is the first thing to give way.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort

from ortserve.routing.agreement import OutputAgreement

log = logging.getLogger(__name__)

Tensors = dict[str, np.ndarray]
# Copies waiting for the shadow thread; more are dropped. Copies that waited together run as one batch: under
# load the shadow wakes to a full queue, and one batch costs one GIL hand-over with the served threads, not many.
PENDING_COPIES = 32
PENDING_BYTES = 64 * 2**20  # ... and no more input bytes than this
_LOWEST_PRIORITY = 19


@dataclass
class ShadowStats:
    answered: int = 0  # requests the served versions answered (copied or not)
    offered: int = 0  # requests chosen for a copy
    compared: int = 0
    dropped: int = 0  # the queue of copies was full: the shadow thread had no idle core
    failed: int = 0  # the shadow version could not run the copy
    outputs: dict[str, OutputAgreement] = field(default_factory=dict)


class ShadowLane:
    def __init__(self, model: str, target_version: int, session: ort.InferenceSession, fraction: float,
                 batched: bool, max_share: float) -> None:
        self.model = model
        self.max_share = max_share  # of the time, while the served versions are answering
        self.batched = batched  # the shadow takes batches: copies of one shape run together
        self.target_version = target_version
        self.fraction = fraction
        self.stats = ShadowStats()
        self._session = session
        self._pending: deque[tuple[Tensors, Tensors]] = deque()
        self._pending_bytes = 0
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._closing = False
        self._woken = threading.Event()  # ends a pause early: the lane is closing
        self._thread = threading.Thread(target=self._serve, name=f"ortserve-shadow-{model}", daemon=True)
        self._thread.start()

    def offer(self, inputs: Tensors, answer: Tensors) -> None:
        """A request has been answered with `answer`: queue a copy for the shadow, or drop it."""
        chosen = self.fraction >= 1.0 or random.random() < self.fraction
        with self._lock:
            self.stats.answered += 1
            if not chosen:
                return
            self.stats.offered += 1
            if len(self._pending) >= PENDING_COPIES or self._closing:  # the usual case under load: no sizing
                self.stats.dropped += 1
                return
            size = sum(array.nbytes for array in inputs.values())
            if self._pending_bytes + size > PENDING_BYTES:
                self.stats.dropped += 1
                return
            self._pending.append((inputs, answer))
            self._pending_bytes += size
            self._ready.notify()

    def close(self) -> None:
        with self._lock:
            self._closing = True
            self._ready.notify()
        self._woken.set()

    def join(self) -> None:
        self._thread.join()

    def _serve(self) -> None:
        _lower_priority()
        while True:
            with self._lock:
                while not self._pending and not self._closing:
                    self._ready.wait()
                if self._closing:
                    return
                copies = list(self._pending)
                self._pending.clear()
                self._pending_bytes = 0
                answered_before = self.stats.answered
            # the processor time this thread spent (its compute, and the Python work during which it held the
            # GIL) is what the copies took from the served threads; time it waited for them costs them nothing
            started = time.thread_time()
            for group in _mergeable(copies, self.batched):
                self._compare(group)
            took = time.thread_time() - started
            if self.stats.answered > answered_before:  # the served versions were busy meanwhile
                self._woken.wait(took * (1 / self.max_share - 1))

    def _compare(self, copies: list[tuple[Tensors, Tensors]]) -> None:
        """Run copies of one shape as one batch and add their comparison. Only this thread writes these figures,
        so that no caller's offer() ever waits on a lock held by a thread of the lowest priority."""
        names = list(copies[0][1])
        if len(copies) == 1:
            inputs, answer = copies[0]
        else:  # one run and one comparison for all: fewer GIL hand-overs with the served threads
            inputs = {name: np.concatenate([copy[0][name] for copy in copies]) for name in copies[0][0]}
            answer = {name: np.concatenate([copy[1][name] for copy in copies]) for name in names}
        try:
            results = self._session.run(names, inputs)
        except Exception as exc:  # the shadow's failure never reaches a caller; it is counted and logged
            self.stats.failed += len(copies)
            log.debug("shadow copy on model %r version %d failed: %s", self.model, self.target_version, exc)
            return
        for name, result in zip(names, results, strict=True):
            self.stats.outputs.setdefault(name, OutputAgreement()).add(answer[name], result)
        self.stats.compared += len(copies)


def _mergeable(copies: list[tuple[Tensors, Tensors]], batched: bool) -> list[list[tuple[Tensors, Tensors]]]:
    """The copies in groups that can run as one batch: same inputs and outputs, same shapes but the first
    dimension (for a model that batches)."""
    if not batched:
        return [[copy] for copy in copies]
    groups: dict[tuple[object, ...], list[tuple[Tensors, Tensors]]] = {}
    for inputs, answer in copies:
        if any(array.ndim == 0 for array in (*inputs.values(), *answer.values())):
            groups[(id(inputs),)] = [(inputs, answer)]
            continue
        shape = (tuple((name, array.dtype.str, array.shape[1:]) for name, array in sorted(inputs.items())),
                 tuple(answer))
        groups.setdefault(shape, []).append((inputs, answer))
    return list(groups.values())


def _lower_priority() -> None:
    """Run the calling thread only on cores nothing else wants: Linux's SCHED_IDLE, where the thread yields to any
    other at once (a niced thread still takes its slices, measured to cost a ResNet50 served beside an FP32 shadow
    9 % of its p50: its two ONNX Runtime threads wait for each other at every operator); else the lowest nice."""
    thread = threading.get_native_id()
    try:
        os.sched_setscheduler(thread, os.SCHED_IDLE, os.sched_param(0))
        return
    except (AttributeError, OSError):  # not Linux, or not allowed here
        pass
    try:
        os.setpriority(os.PRIO_PROCESS, thread, _LOWEST_PRIORITY)
    except (AttributeError, OSError) as exc:
        log.warning("shadow copies run at normal priority: %s", exc)
