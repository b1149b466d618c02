"""A request with more rows than its model's batches hold, run as slices: the slices' answers joined into one.

Each slice is a request of its own to the batcher (merged with others' rows as any request is), its rows a view
of the caller's arrays. The first error is the request's answer; the slices still queued are then of no use to
anyone, and the caller withdraws them (ServedVersion.submit)."""

from __future__ import annotations

import threading

import numpy as np

from ortserve.runtime.batcher import Done, Tensors


def row_slices(inputs: Tensors, rows: int, limit: int) -> list[Tensors]:
    """The inputs cut along the first dimension into slices of at most `limit` rows (views)."""
    return [{name: array[start:start + limit] for name, array in inputs.items()} for start in range(0, rows, limit)]


class JoinedAnswer:
    """Collects the answers of `count` slices, from any threads; `done` gets the outputs stacked in slice order,
    or the first error, once."""

    def __init__(self, done: Done, count: int) -> None:
        self._done = done
        self._parts: list[Tensors | None] = [None] * count
        self._left = count
        self._over = False
        self._lock = threading.Lock()

    def part(self, index: int) -> Done:
        def arrived(result: Tensors | BaseException) -> None:
            with self._lock:
                if self._over:
                    return
                if isinstance(result, BaseException):
                    self._over = True
                else:
                    self._parts[index] = result
                    self._left -= 1
                    self._over = self._left == 0
                    if not self._over:
                        return
            self._done(result if isinstance(result, BaseException) else self._joined())

        return arrived

    def abandon(self) -> None:
        """The request was refused while its slices were submitted: no answer is given from here."""
        with self._lock:
            self._over = True

    def _joined(self) -> Tensors:
        parts = [part for part in self._parts if part is not None]
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
