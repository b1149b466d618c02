"""A model's inputs and outputs (names, element types, shapes) read from an ONNX Runtime session."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from ortserve.dtypes import BY_ONNX, TensorType, from_onnx
from ortserve.errors import InvalidInput

DYNAMIC = -1


@dataclass(frozen=True)
class TensorSpec:
    name: str
    type: TensorType
    shape: tuple[int, ...]  # DYNAMIC (-1) where the dimension is symbolic or unknown
    dimension_names: tuple[str, ...] = ()  # the model's name of each symbolic dimension ("" for the others)

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

    @functools.cached_property
    def number_inputs(self) -> frozenset[str]:
        """The inputs that take numbers: bytes sent for one stay bytes, for an image model's image input to
        decode (runtime.encoded_images) and any other to refuse by their type."""
        return frozenset(spec.name for spec in self.inputs if not spec.type.is_bytes)

    @functools.cached_property
    def named_dimensions(self) -> dict[str, tuple[tuple[str, int], ...]]:
        """Each dimension name the model gives on more than one input, with the (input, axis) that carry it."""
        places: dict[str, list[tuple[str, int]]] = {}
        for spec in self.inputs:
            for axis, name in enumerate(spec.dimension_names):
                if name:
                    places.setdefault(name, []).append((spec.name, axis))
        return {name: tuple(where) for name, where in places.items() if len(where) > 1}

    def dimension_disagreement(self, inputs: dict[str, np.ndarray]) -> str | None:
        """Where inputs differ in a dimension the model names alike (input_ids and attention_mask of different
        lengths): said after a failed run, as the likely cause. Not checked before a run: ONNX Runtime does not
        enforce the names, and an exporter may give two independent dimensions one name."""
        for name, where in self.named_dimensions.items():
            sizes = {(tensor, axis): inputs[tensor].shape[axis] for tensor, axis in where
                     if tensor in inputs and inputs[tensor].ndim > axis}
            if len(set(sizes.values())) > 1:
                listed = ", ".join(f"{tensor!r} {size}" for (tensor, _), size in sizes.items())
                return f"the model names dimension {name!r} alike on several inputs, and they differ here ({listed})"
        return None

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
    names = tuple(dim if isinstance(dim, str) else "" for dim in (node.shape or ()))
    try:
        tensor_type = from_onnx(node.type)
    except InvalidInput:
        served = ", ".join(name.removeprefix("tensor(").removesuffix(")") for name in BY_ONNX)
        raise InvalidInput(f"{kind} {node.name!r} is a {node.type}, which ortserve does not serve (tensors of "
                           f"{served})") from None
    return TensorSpec(name=node.name, type=tensor_type, shape=shape, dimension_names=names)


def read_signature(session: ort.InferenceSession) -> Signature:
    return Signature(
        inputs=tuple(_spec(node, "input") for node in session.get_inputs()),
        outputs=tuple(_spec(node, "output") for node in session.get_outputs()),
    )
