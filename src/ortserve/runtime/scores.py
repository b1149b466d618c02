"""Class scores as people read them: probabilities, and the best classes with their labels (image and text
classifiers alike)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def probabilities(scores: np.ndarray, kind: str) -> np.ndarray:
    """Rows of class scores as probabilities: a softmax over logits, a sigmoid of each logit of a multi-label
    model (each class on its own, as transformers' text classification treats them), probabilities as they are."""
    if kind == "multi_label_logits":
        return 1 / (1 + np.exp(-scores))
    if kind != "logits":
        return scores
    shifted = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def ranked(row: np.ndarray, k: int, label: Callable[[int], str]) -> list[dict[str, object]]:
    """The k best classes of one row of probabilities, best first."""
    best = np.argsort(-row, kind="stable")[:k]
    return [{"label": label(int(i)), "class_id": int(i), "confidence": float(row[i])} for i in best]
