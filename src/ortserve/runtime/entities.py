"""Token labels into entities, for text models of task `tag` (named entities, parts of speech): each token takes
its most probable label, and runs of tokens become one entity the way transformers' token-classification
pipeline groups them (`aggregation_strategy="simple"`), so clients moving from it get the same answers.

A label `B-X` starts an entity of type X, `I-X` continues one of type X (or starts one after another type), a
label without a prefix continues its own type; entities of label `O` are dropped. An entity's score is the mean
of its tokens' probabilities, its `word` the text it spans (transformers decodes the tokens instead, which
lower-cases for an uncased vocabulary), `start` and `end` character offsets into the text.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

OUTSIDE = "O"


def _tag(label: str) -> tuple[str, str]:
    """(B or I, entity type) of a label."""
    if label.startswith(("B-", "I-")):
        return label[0], label[2:]
    return "I", label


def entities(text: str, offsets: list[tuple[int, int]], tokens: np.ndarray, best: np.ndarray, scores: np.ndarray,
             label: Callable[[int], str]) -> list[dict[str, Any]]:
    """The entities of one text: `tokens` the positions of its own tokens (special tokens and padding left out),
    `best` and `scores` each position's most probable label and its probability."""
    found: list[dict[str, Any]] = []
    group: list[int] = []  # positions of the entity being gathered
    group_type = ""

    def close() -> None:
        if not group:
            return
        entity_type = _tag(label(int(best[group[0]])))[1]
        if entity_type != OUTSIDE:
            start, end = offsets[group[0]][0], offsets[group[-1]][1]
            found.append({"entity_group": entity_type, "score": float(np.mean(scores[group])),
                          "word": text[start:end], "start": start, "end": end})

    for position in tokens.tolist():
        prefix, entity_type = _tag(label(int(best[position])))
        if group and entity_type == group_type and prefix != "B":
            group.append(position)
            continue
        close()
        group, group_type = [position], entity_type
    close()
    return found
