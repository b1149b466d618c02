"""A model's inputs and outputs (names, element types, shapes) read from an ONNX Runtime session."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import onnxruntime as ort

from ortserve.dtypes import BY_ONNX, TensorType, from_onnx
from ortserve.errors import InvalidInput

DYNAMIC = -1


@dataclass(frozen=True)
class TensorSpec:
    name: str
    type: TensorType
    shape: tuple[int, ...]  # DYNAMIC (-1) where the dimension is symbolic or unknown

    @property
    def rank(self) -> int:
        return len(self.shape)

    @functools.cached_property
    def fixed_dimensions(self) -> tuple[tuple[int, int], ...]:
        """(index, size) of each dimension that is not dynamic: what every request must match."""
        return tuple((index, size) for index, size in enumerate(self.shape) if size != DYNAMIC)


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def input(self, name: str) -> TensorSpec | None:
        return next((spec for spec in self.inputs if spec.name == name), None)

    def output(self, name: str) -> TensorSpec | None:
        return next((spec for spec in self.outputs if spec.name == name), None)

    @property
    def fixed_batch_size(self) -> int | None:
        """The first input's leading dimension when the model fixes it; None when it is dynamic."""
        first = self.inputs[0].shape[0] if self.inputs and self.inputs[0].rank else DYNAMIC
        return None if first == DYNAMIC else first

    @property
    def batch_dimension_is_dynamic(self) -> bool:
        """True when every input and output has a leading dynamic dimension: the model is batchable."""
        tensors = self.inputs + self.outputs
        return all(spec.rank >= 1 and spec.shape[0] == DYNAMIC for spec in tensors)


def _spec(node: ort.NodeArg, kind: str) -> TensorSpec:
    shape = tuple(dim if isinstance(dim, int) and dim >= 0 else DYNAMIC for dim in (node.shape or ()))
    try:
        tensor_type = from_onnx(node.type)
    except InvalidInput:
        served = ", ".join(name.removeprefix("tensor(").removesuffix(")") for name in BY_ONNX)
        raise InvalidInput(f"{kind} {node.name!r} is a {node.type}, which ortserve does not serve (tensors of "
                           f"{served})") from None
    return TensorSpec(name=node.name, type=tensor_type, shape=shape)


def read_signature(session: ort.InferenceSession) -> Signature:
    return Signature(
        inputs=tuple(_spec(node, "input") for node in session.get_inputs()),
        outputs=tuple(_spec(node, "output") for node in session.get_outputs()),
    )
