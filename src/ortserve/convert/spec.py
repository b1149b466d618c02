"""Declared model inputs (`name:dtype:dims`), and sample inputs generated from them for parity checks."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from ortserve.digits import is_decimal
from ortserve.errors import InvalidInput
from ortserve.shapes import IMAGE_SIDE, image_axes

# example sizes of named dynamic axes when exporting; "samples": raw audio, one second at 16 kHz (a shorter one
# is shorter than the feature extractors' convolution kernels)
DEFAULT_DYNAMIC_SIZE = {"batch": 2, "samples": 16000}
OTHER_DYNAMIC_SIZE = 8


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: np.dtype
    dims: tuple[int | str, ...]  # ints are fixed, strings name a dynamic dimension ("batch", "sequence")
    # the values the model knows, when it looks the input up in a table (a vocabulary): samples draw from them
    # and from one value it does not know
    known: tuple[str | int | float, ...] | None = None
    # an integer input the model uses as row numbers of a table of this many rows (an embedding): samples are ids
    # below it
    rows: int | None = None

    @classmethod
    def parse(cls, text: str) -> InputSpec:
        """`input:float32:batch,3,224,224`."""
        parts = text.split(":")
        if len(parts) != 3 or not parts[0] or not parts[2]:
            raise InvalidInput(f"input {text!r} must look like name:dtype:dim,dim (e.g. input:float32:batch,784)")
        name, dtype_name, dims_text = parts
        try:
            dtype = np.dtype(dtype_name)
        except TypeError:
            raise InvalidInput(f"input {name!r}: unknown dtype {dtype_name!r}") from None
        dims = tuple(int(d) if is_decimal(d) else d for d in dims_text.split(","))
        return cls(name, dtype, dims)

    def sample_shape(self) -> tuple[int, ...]:
        spatial = image_axes(self.dims) if self.dtype.kind in "fu" else ()
        return tuple(d if isinstance(d, int) else IMAGE_SIDE if axis in spatial
                     else DEFAULT_DYNAMIC_SIZE.get(d, OTHER_DYNAMIC_SIZE) for axis, d in enumerate(self.dims))

    def sample(self, rng: np.random.Generator, low: float, high: float) -> np.ndarray:
        shape = self.sample_shape()
        if self.known:
            return _drawn_from(self.known, self.dtype, rng, shape)
        if self.dtype.kind in "iu":
            if self.rows is not None:
                return rng.integers(0, self.rows, size=shape).astype(self.dtype)
            return rng.integers(int(low), int(high), size=shape, endpoint=False).astype(self.dtype)
        if self.dtype.kind == "b":
            return rng.random(shape) < 0.5
        if self.dtype.kind in "OSU":  # text: words of a few letters
            letters = np.array(list("abcdefghij"))
            return np.array(["".join(rng.choice(letters, int(rng.integers(1, 8)))) for _ in range(math.prod(shape))],
                            dtype=object).reshape(shape)
        return rng.uniform(low, high, size=shape).astype(self.dtype)


def with_rows(inputs: list[InputSpec], rows: dict[str, int]) -> list[InputSpec]:
    """The inputs, each that an exported graph uses as row numbers of a table (`rows`, from
    ortserve.indexed_inputs: an embedding's ids) with the table's row count, so that its samples are ids the
    source model takes too."""
    return [replace(spec, rows=rows[spec.name]) if spec.name in rows else spec for spec in inputs]


def _drawn_from(known: tuple[str | int | float, ...], dtype: np.dtype, rng: np.random.Generator,
                shape: tuple[int, ...]) -> np.ndarray:
    """Values drawn from those known, and from one more that is not."""
    unknown: str | int | float
    if dtype.kind in "OSU":
        unknown = next(word for word in (f"unknown{n}" for n in range(len(known) + 1)) if word not in known)
    elif dtype.kind in "iu":
        unknown = int(max(known)) + 1  # type: ignore[arg-type]
    else:
        unknown = float(max(known)) + 1.0  # type: ignore[arg-type]
    candidates = np.array([*known, unknown], dtype=object if dtype.kind in "OSU" else dtype)
    return candidates[rng.integers(0, len(candidates), size=shape)]
