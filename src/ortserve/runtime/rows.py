"""Whether a model's outputs have one row per input row, checked by running it: a dynamic first dimension on every
input and output says only that the shapes allow batching, not that each output's first dimension is the batch's.

An output whose first dimension is dynamic but counts something else (a flattened output, a detector's boxes of
every image, the indices of NonZero) passes the shape rule, and the batcher would cut it into the wrong pieces:
each request of a merged batch would get a slice of the others' answer. So before batching is inferred for a
model, it runs once on PROBE_ROWS distinct rows and once on one row, and each output must have that many rows.

Values are not compared: rows run together may differ from the same rows run alone by much more than kernel
noise in models that are batched everywhere (dynamic INT8 quantizes with a scale taken over the batch:
MiniLM's hidden states differed by 15-24 % of their mean magnitude, measured on this machine), so a value test
could not tell them from a model whose rows truly depend on each other.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from ortserve.runtime.run_errors import RUN_ERRORS
from ortserve.runtime.signature import Signature
from ortserve.runtime.warmup import zero_inputs

Tensors = dict[str, np.ndarray]
PROBE_ROWS = 3  # not 2 or 4, which fixed sizes of other dimensions often are


def batching_problem(session: ort.InferenceSession, signature: Signature, shapes: dict[str, list[int]]
                     ) -> str | None:
    """Why the model's requests must not be merged into batches, or None when its outputs have a row per input
    row (or when it refused the probe's inputs: then the shape rule stands)."""
    rows = _distinct_rows(signature, shapes)
    names = [spec.name for spec in signature.outputs]
    for count in (PROBE_ROWS, 1):
        try:
            outputs = session.run(names, {name: array[:count] for name, array in rows.items()})
        except RUN_ERRORS:  # inputs out of the model's range: no evidence either way
            return None
        for name, output in zip(names, outputs, strict=True):
            if not isinstance(output, np.ndarray):
                return f"output {name!r} is a {type(output).__name__}, not a tensor with a row per input row"
            if output.ndim == 0 or output.shape[0] != count:
                return (f"output {name!r} has shape {list(output.shape)} for a batch of {count} rows: its first "
                        "dimension is not the batch")
    return None


def _distinct_rows(signature: Signature, shapes: dict[str, list[int]]) -> Tensors:
    """PROBE_ROWS rows that differ from each other (an output's size may depend on the values): normal values for
    floats, 0 and 1 for integers and booleans (valid token ids and pixels), empty strings."""
    rng = np.random.default_rng(0)
    feeds = zero_inputs(signature, PROBE_ROWS, shapes, batched=True)
    for name, array in feeds.items():
        if array.dtype.kind in "fc":
            feeds[name] = rng.standard_normal(array.shape).astype(array.dtype)
        elif array.dtype.kind in "iub":
            feeds[name] = rng.integers(0, 2, array.shape).astype(array.dtype)
    return feeds
