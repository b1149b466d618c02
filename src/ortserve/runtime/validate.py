"""Checks a request's tensors against the model signature before they reach a batch."""

from __future__ import annotations

from collections.abc import Hashable
from typing import NoReturn

import numpy as np

from ortserve.dtypes import from_numpy
from ortserve.errors import InvalidInput
from ortserve.runtime.signature import Signature, TensorSpec


class BatchTooLarge(InvalidInput):
    """More rows than the model's batches hold: refused, unless the version runs it as slices (runtime.slices)."""

    def __init__(self, rows: int, max_batch_size: int) -> None:
        super().__init__(f"batch of {rows} rows exceeds the model's max_batch_size {max_batch_size}")
        self.rows = rows


def _shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(dim) for dim in shape) + "]"


def _check_tensor(spec: TensorSpec, array: np.ndarray) -> None:
    if array.dtype != spec.type.numpy and not (spec.type.is_bytes and array.dtype.kind in "SUO"):
        raise InvalidInput(
            f"input {spec.name!r} has datatype {from_numpy(array.dtype).v2}, "
            f"but the model expects {spec.type.v2}"
        )
    shape = array.shape
    fits = len(shape) == len(spec.shape)
    if fits:
        for index, size in spec.fixed_dimensions:
            if shape[index] != size:
                fits = False
                break
    if not fits:
        raise InvalidInput(
            f"input {spec.name!r} has shape {_shape_text(shape)}, "
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
    """Validate the inputs; return the number of batch rows (0 when unbatched) and the merge key. Runs for every
    request: one pass over the model's inputs, the errors worked out only when there is one."""
    specs = signature.inputs
    if len(inputs) != len(specs):
        _name_error(signature, inputs)
    rows = -1
    for spec in specs:
        array = inputs.get(spec.name)
        if array is None:
            _name_error(signature, inputs)
        _check_tensor(spec, array)
        if max_batch_size and rows != array.shape[0]:
            if rows >= 0:
                counts = sorted({inputs[other.name].shape[0] for other in specs})
                raise InvalidInput(f"inputs disagree on the batch size (first dimension): {counts}")
            rows = array.shape[0]
    if max_batch_size == 0:
        return 0, None
    if rows < 1:
        raise InvalidInput("the batch is empty: the first dimension must be at least 1")
    if rows > max_batch_size:
        raise BatchTooLarge(rows, max_batch_size)
    if len(specs) == 1:
        return rows, (array.shape[1:],)
    return rows, tuple(inputs[spec.name].shape[1:] for spec in specs)


def _name_error(signature: Signature, inputs: dict[str, np.ndarray]) -> NoReturn:
    """Raise for the first unknown input name, else for the first missing one."""
    for name in inputs:
        input_spec(signature, name)
    for spec in signature.inputs:
        if spec.name not in inputs:
            raise InvalidInput(f"missing input {spec.name!r}")
    raise InvalidInput(f"the inputs {sorted(inputs)} do not match the model's {[s.name for s in signature.inputs]}")


def check_outputs(signature: Signature, names: list[str] | None) -> None:
    for name in names or ():
        if signature.output(name) is None:
            known = ", ".join(repr(spec.name) for spec in signature.outputs)
            raise InvalidInput(f"unknown output {name!r}; the model's outputs are {known}")
