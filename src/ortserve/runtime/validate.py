"""Checks a request's tensors against the model signature before they reach a batch."""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np

from ortserve.dtypes import from_numpy
from ortserve.errors import InvalidInput
from ortserve.runtime.signature import DYNAMIC, Signature, TensorSpec


def _shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(dim) for dim in shape) + "]"


def _check_tensor(spec: TensorSpec, array: np.ndarray) -> None:
    if array.dtype != spec.type.numpy and not (spec.type.is_bytes and array.dtype.kind in "SUO"):
        raise InvalidInput(
            f"input {spec.name!r} has datatype {from_numpy(array.dtype).v2}, "
            f"but the model expects {spec.type.v2}"
        )
    fits = array.ndim == spec.rank and all(
        want in (DYNAMIC, got) for want, got in zip(spec.shape, array.shape, strict=True)
    )
    if not fits:
        raise InvalidInput(
            f"input {spec.name!r} has shape {_shape_text(array.shape)}, "
            f"but the model expects {_shape_text(spec.shape)} (-1: any size)"
        )


def input_spec(signature: Signature, name: str) -> TensorSpec:
    """The signature's input of that name, or an error that lists the names the model has."""
    spec = signature.input(name)
    if spec is None:
        known = ", ".join(repr(s.name) for s in signature.inputs)
        raise InvalidInput(f"unknown input {name!r}; the model's inputs are {known}")
    return spec


def check_inputs(signature: Signature, inputs: dict[str, np.ndarray], max_batch_size: int) -> tuple[int, Hashable]:
    """Validate the inputs; return the number of batch rows (0 when unbatched) and the merge key."""
    for name in inputs:
        input_spec(signature, name)
    for spec in signature.inputs:
        array = inputs.get(spec.name)
        if array is None:
            raise InvalidInput(f"missing input {spec.name!r}")
        _check_tensor(spec, array)
    if max_batch_size == 0:
        return 0, None
    rows = {inputs[spec.name].shape[0] for spec in signature.inputs}
    if len(rows) != 1:
        raise InvalidInput(f"inputs disagree on the batch size (first dimension): {sorted(rows)}")
    (count,) = rows
    if count < 1:
        raise InvalidInput("the batch is empty: the first dimension must be at least 1")
    if count > max_batch_size:
        raise InvalidInput(f"batch of {count} rows exceeds the model's max_batch_size {max_batch_size}")
    key = tuple(inputs[spec.name].shape[1:] for spec in signature.inputs)
    return count, key


def check_outputs(signature: Signature, names: list[str] | None) -> None:
    for name in names or ():
        if signature.output(name) is None:
            known = ", ".join(repr(spec.name) for spec in signature.outputs)
            raise InvalidInput(f"unknown output {name!r}; the model's outputs are {known}")
