"""The answer span an extractive question-answering model's logits pick, against a search over every span."""

from __future__ import annotations

import numpy as np
import pytest

from ortserve.runtime.answers import best_span


def _searched(start: np.ndarray, end: np.ndarray, context: np.ndarray, longest: int) -> tuple[int, int, float]:
    """Every span of context tokens, scored by its start and end probabilities (a softmax over the context and
    the leading [CLS], whose share is then dropped)."""
    counted = context.copy()
    counted[0] = True
    start_p = np.exp(start - start[counted].max()) * counted
    end_p = np.exp(end - end[counted].max()) * counted
    start_p, end_p = start_p / start_p.sum(), end_p / end_p.sum()
    best = (-1, -1, -1.0)
    for first in range(len(start)):
        for last in range(first, min(first + longest, len(end))):
            if context[first] and context[last] and start_p[first] * end_p[last] > best[2]:
                best = (first, last, float(start_p[first] * end_p[last]))
    return best


@pytest.mark.parametrize("seed", range(20))
def test_the_best_span_is_the_best_of_every_span_within_the_longest(seed: int) -> None:
    rng = np.random.default_rng(seed)
    width = int(rng.integers(8, 40))
    start, end = rng.normal(0, 3, width), rng.normal(0, 3, width)
    context = np.zeros(width, bool)
    first = int(rng.integers(2, width // 2))  # [CLS] question [SEP] context [SEP] padding
    context[first:int(rng.integers(first + 1, width))] = True
    longest = int(rng.integers(1, 8))
    span = best_span(start, end, context, True, longest)
    assert span is not None
    expected = _searched(start, end, context, longest)
    assert (span.first, span.last) == expected[:2]
    assert span.score == pytest.approx(expected[2], rel=1e-9)
    assert span.last - span.first < longest


def test_a_context_with_no_token_has_no_answer() -> None:
    assert best_span(np.zeros(4), np.zeros(4), np.zeros(4, bool), True, 15) is None
