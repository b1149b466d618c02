"""Tensor conversions shared by the front ends: JSON values and raw bytes to numpy, and back."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import orjson

from ortserve.dtypes import TensorType
from ortserve.errors import InvalidInput

_ENCODE = orjson.OPT_SERIALIZE_NUMPY


def loads(body: bytes | memoryview) -> Any:
    """Parse a JSON body; NaN and Infinity are accepted as TF Serving accepts them."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        try:
            return json.loads(bytes(body))
        except (ValueError, UnicodeDecodeError):
            raise InvalidInput(f"malformed JSON body: {exc}") from None


def dumps(payload: Any, arrays: list[np.ndarray]) -> bytes:
    """Serialize a payload holding `arrays`; orjson cannot write NaN/Infinity, so those take the slow path."""
    finite = all(array.dtype.kind != "f" or np.isfinite(array).all() for array in arrays)
    if finite:
        return orjson.dumps(payload, option=_ENCODE)
    return json.dumps(payload, default=_plain).encode()


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot serialize {type(value).__name__}")


def text_elements(name: str, values: np.ndarray) -> np.ndarray:
    """ONNX Runtime string tensors hold text: bytes elements are decoded as UTF-8."""
    flat = values.reshape(-1)
    try:
        decoded = [item.decode() if isinstance(item, bytes) else str(item) for item in flat]
    except UnicodeDecodeError:
        raise InvalidInput(f"input {name!r}: a BYTES element is not UTF-8 text, which ONNX string tensors need") \
            from None
    result = np.empty(len(decoded), dtype=object)
    result[:] = decoded
    return result.reshape(values.shape)


def array_from_json(name: str, value: Any, tensor_type: TensorType) -> np.ndarray:
    """A nested JSON list (or scalar) as an array of the model's element type."""
    try:
        if tensor_type.is_bytes:
            return text_elements(name, np.array(value, dtype=object))
        return np.asarray(value, dtype=tensor_type.numpy)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidInput(f"input {name!r} cannot be read as {tensor_type.v2}: {exc}") from None


def element_count(shape: list[int]) -> int:
    return math.prod(shape)


def array_from_bytes(name: str, buffer: memoryview, tensor_type: TensorType, shape: list[int]) -> np.ndarray:
    """Raw little-endian tensor bytes as an array, without copying; BYTES use 4-byte length prefixes."""
    count = element_count(shape)
    if tensor_type.is_bytes:
        return text_elements(name, _length_prefixed(name, buffer, count)).reshape(shape)
    expected = count * tensor_type.numpy.itemsize
    if len(buffer) != expected:
        raise InvalidInput(
            f"input {name!r} has {len(buffer)} bytes of data, but shape {shape} of {tensor_type.v2} needs {expected}"
        )
    return np.frombuffer(buffer, dtype=tensor_type.numpy, count=count).reshape(shape)


def _length_prefixed(name: str, buffer: memoryview, count: int) -> np.ndarray:
    items = np.empty(count, dtype=object)
    offset = 0
    for index in range(count):
        if offset + 4 > len(buffer):
            raise InvalidInput(f"input {name!r}: BYTES data ends before element {index} of {count}")
        size = int.from_bytes(buffer[offset : offset + 4], "little")
        offset += 4
        if offset + size > len(buffer):
            raise InvalidInput(f"input {name!r}: BYTES element {index} is cut short")
        items[index] = bytes(buffer[offset : offset + size])
        offset += size
    if offset != len(buffer):
        raise InvalidInput(f"input {name!r}: {len(buffer) - offset} bytes left over after {count} BYTES elements")
    return items


def array_to_bytes(array: np.ndarray) -> bytes | memoryview:
    """Tensor bytes for the wire: a view of a contiguous numeric array, or length-prefixed strings."""
    if array.dtype == object or array.dtype.kind in "SU":
        parts = []
        for item in array.reshape(-1):
            data = item if isinstance(item, bytes) else str(item).encode()
            parts.append(len(data).to_bytes(4, "little"))
            parts.append(data)
        return b"".join(parts)
    return memoryview(np.ascontiguousarray(array)).cast("B")


def json_tensor(array: np.ndarray) -> Any:
    """What orjson can write for a tensor: the array itself when numeric, nested lists for strings."""
    if array.dtype == object:
        return array.tolist()
    return np.ascontiguousarray(array)
