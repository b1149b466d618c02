"""Triton's classification extension for KServe V2 (REST and gRPC): an output requested with the `classification`
parameter (tritonclient's `class_count`) is answered as its `count` highest values instead of its tensor, each as
the string "<value>:<index>[:<label>]", a BYTES tensor of shape [batch, count] (batched models: per row, over
every element past the batch dimension) or [count]. Labels are an image model's (config.yaml `image.labels_file`)
for the output its scores come from, or the class names a classifier in the model carries (runtime.class_labels)."""

from __future__ import annotations

import numpy as np

from ortserve.errors import InvalidInput
from ortserve.runtime.model import ServedVersion

PARAMETER = "classification"


def class_count(served: ServedVersion, output: str, value: object) -> int:
    """The parameter's value, checked: a whole number of at least 1, for an output of numbers."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(f"output {output!r}: the 'classification' parameter must be a whole number of at least 1, "
                           f"got {value!r}")
    spec = served.output_spec(output)  # an unknown output is refused with the request's other outputs
    if spec is not None and (spec.type.is_bytes or spec.type.numpy.kind not in "biuf"):
        raise InvalidInput(f"output {output!r} is {spec.type.v2} data, which has no order to classify by")
    return value


def classified(served: ServedVersion, name: str, array: np.ndarray, count: int) -> np.ndarray:
    """`array`'s best `count` classes, best first, as "<value>:<index>[:<label>]" strings (an object array)."""
    batched = served.max_batch_size > 0 and array.ndim > 0
    rows = array.reshape(len(array), -1) if batched else array.reshape(1, -1)
    count = min(count, rows.shape[1])
    best = np.argsort(-rows.astype(np.float64), axis=1, kind="stable")[:, :count]
    labels = served.labels_of(name)
    integral = array.dtype.kind in "biu"
    answers = np.empty(best.shape, dtype=object)
    for row_index, (row, indices) in enumerate(zip(rows, best, strict=True)):
        for rank, index in enumerate(indices.tolist()):
            value = row[index]
            text = f"{int(value)}:{index}" if integral else f"{float(value):f}:{index}"
            if labels is not None and index < len(labels):
                text += f":{labels[index]}"
            answers[row_index, rank] = text
    return answers if batched else answers[0]
