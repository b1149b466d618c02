"""Shadow traffic: a copy of a fraction of a model's requests runs on another version after each caller has been
answered, and the answers are compared (routing.agreement), never returned.

The copies run on one thread of the lowest scheduling priority, on a session of the shadow version of their
own with one intra-op thread, so that all their compute is on that thread: when the served versions need the
cores, the operating system gives them the cores, the copies wait, and those that do not fit in a short queue
are dropped. A shadow therefore takes the cores the served traffic leaves idle, and under load it is the first
thing to give way (docs/operations.md; measured in docs/benchmarks.md).
"""

from __future__ import annotations

import logging
import os
import random
import threading
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort

from ortserve.routing.agreement import OutputAgreement

log = logging.getLogger(__name__)

Tensors = dict[str, np.ndarray]
PENDING_COPIES = 4  # copies waiting for the shadow thread; more are dropped
_LOWEST_PRIORITY = 19


@dataclass
class ShadowStats:
    offered: int = 0  # requests chosen for a copy
    compared: int = 0
    dropped: int = 0  # the queue of copies was full: the shadow thread had no idle core
    failed: int = 0  # the shadow version could not run the copy
    outputs: dict[str, OutputAgreement] = field(default_factory=dict)


class ShadowLane:
    def __init__(self, model: str, target_version: int, session: ort.InferenceSession, fraction: float) -> None:
        self.model = model
        self.target_version = target_version
        self.fraction = fraction
        self.stats = ShadowStats()
        self._session = session
        self._pending: deque[tuple[Tensors, Tensors]] = deque()
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._closing = False
        self._thread = threading.Thread(target=self._serve, name=f"ortserve-shadow-{model}", daemon=True)
        self._thread.start()

    def offer(self, inputs: Tensors, answer: Tensors) -> None:
        """A request has been answered with `answer`: queue a copy for the shadow, or drop it."""
        if self.fraction < 1.0 and random.random() >= self.fraction:
            return
        with self._lock:
            self.stats.offered += 1
            if len(self._pending) >= PENDING_COPIES or self._closing:
                self.stats.dropped += 1
                return
            self._pending.append((inputs, answer))
            self._ready.notify()

    def close(self) -> None:
        with self._lock:
            self._closing = True
            self._ready.notify()

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
                inputs, answer = self._pending.popleft()
            # from here on only this thread writes: no lock that a caller's offer() could wait on
            names = list(answer)
            try:
                results = self._session.run(names, inputs)
            except Exception as exc:  # the shadow's failure never reaches a caller; it is counted and logged
                self.stats.failed += 1
                log.debug("shadow copy on model %r version %d failed: %s", self.model, self.target_version, exc)
                continue
            for name, result in zip(names, results, strict=True):
                self.stats.outputs.setdefault(name, OutputAgreement()).add(answer[name], result)
            self.stats.compared += 1


def _lower_priority() -> None:
    """Give the calling thread the lowest priority (Linux: nice applies per thread)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), _LOWEST_PRIORITY)
    except (AttributeError, OSError) as exc:
        log.warning("shadow copies run at normal priority: %s", exc)
