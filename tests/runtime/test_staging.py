"""runtime.staging: batches stacked into a buffer each thread reuses."""

from __future__ import annotations

import threading

import numpy as np

from ortserve.runtime import staging


def _rows(count: int, value: float, dtype: type = np.float32) -> list[np.ndarray]:
    return [np.full((1, 3), value + index, dtype) for index in range(count)]


def test_a_thread_stacks_into_the_same_buffer_batch_after_batch() -> None:
    first = staging.stack("stack-test-x", _rows(4, 0.0), 4)
    np.testing.assert_array_equal(first, np.concatenate(_rows(4, 0.0)))
    second = staging.stack("stack-test-x", _rows(2, 10.0), 2)  # fewer rows: a view of the same buffer
    np.testing.assert_array_equal(second, np.concatenate(_rows(2, 10.0)))
    assert np.shares_memory(first, second) and second.flags.c_contiguous
    larger = staging.stack("stack-test-x", _rows(6, 20.0), 6)  # more rows than the buffer has: a new one
    np.testing.assert_array_equal(larger, np.concatenate(_rows(6, 20.0)))
    assert not np.shares_memory(first, larger)
    other_dtype = staging.stack("stack-test-x", _rows(2, 1.0, np.float64), 2)
    assert other_dtype.dtype == np.float64 and not np.shares_memory(larger, other_dtype)


def test_strings_are_stacked_fresh_and_threads_keep_their_own_buffers() -> None:
    texts = [np.array([b"a"], dtype=object), np.array([b"b"], dtype=object)]
    once, again = staging.stack("stack-test-t", texts, 2), staging.stack("stack-test-t", texts, 2)
    assert list(once) == [b"a", b"b"] and not np.shares_memory(once, again)

    mine = staging.stack("stack-test-y", _rows(2, 0.0), 2)
    theirs: list[np.ndarray] = []
    worker = threading.Thread(target=lambda: theirs.append(staging.stack("stack-test-y", _rows(2, 5.0), 2)))
    worker.start()
    worker.join()
    assert not np.shares_memory(mine, theirs[0])
    np.testing.assert_array_equal(mine, np.concatenate(_rows(2, 0.0)))  # untouched by the other thread
