"""The answer to a question in its context, from an extractive question-answering model's start and end logits
(text task `answer`), chosen as transformers' question-answering pipeline chooses it, so clients moving from it
get the same answers: a softmax of each over the context's tokens and the leading special token ([CLS], <s>),
whose share is then dropped; the span of at most `longest` tokens, ending at or after it starts, whose start and
end probabilities have the largest product; that product is its score.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Span:
    first: int  # token positions, both included
    last: int
    score: float


def _softmax(logits: np.ndarray, counted: np.ndarray) -> np.ndarray:
    kept = np.where(counted, logits, -np.inf)
    shifted = np.exp(kept - kept.max())
    return shifted / shifted.sum()


def best_span(start_logits: np.ndarray, end_logits: np.ndarray, context: np.ndarray, leading_special: bool,
              longest: int) -> Span | None:
    """`context`: which token positions are the context's; `leading_special`: position 0 is a special token that
    counts in the softmax (transformers unmasks the [CLS] token there). None when the context has no token."""
    if not context.any():
        return None
    counted = context.copy()
    counted[0] |= leading_special
    start = _softmax(start_logits.astype(np.float64), counted) * context
    end = _softmax(end_logits.astype(np.float64), counted) * context
    # row i: the spans starting at token i, of 1 to `longest` tokens (past the last token: 0)
    ends = np.lib.stride_tricks.sliding_window_view(np.pad(end, (0, longest - 1)), longest)
    pairs = start[:, np.newaxis] * ends
    first, length = np.unravel_index(int(np.argmax(pairs)), pairs.shape)
    return Span(int(first), int(first + length), float(pairs[first, length]))
