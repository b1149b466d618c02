"""Tensor conversions shared by the front ends: JSON values and raw bytes to numpy, and back."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np
import orjson
import simdjson

from ortserve.dtypes import TensorType
from ortserve.errors import InvalidInput

_ENCODE = orjson.OPT_SERIALIZE_NUMPY


MAX_DIMENSIONS = 32  # numpy's limit is 64; ONNX Runtime's tensors stay far below either
_SIMDJSON_CODE = re.compile(r"[A-Z0-9_]+_ERROR: (.*)")


def loads(body: bytes | memoryview, lazy_keys: frozenset[str] = frozenset()) -> Any:
    """Parse a JSON body into Python values.

    Arrays under a key in `lazy_keys` stay parsed-but-unconverted (simdjson arrays): `array_from_json` reads
    their numbers straight into numpy, without a Python float per element. NaN and Infinity, which TF Serving
    accepts, take the standard library's slower path.
    """
    try:
        document = simdjson.Parser().parse(bytes(body))
    except RuntimeError as exc:  # simdjson's BIGINT_ERROR, DEPTH_ERROR, ...: JSON no tensor can hold
        raise InvalidInput(f"malformed JSON body: {_reason(exc)}") from None
    except ValueError as exc:  # not JSON to simdjson; NaN and Infinity are to the standard library
        try:
            return json.loads(bytes(body))
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            raise InvalidInput(f"malformed JSON body: {_reason(exc)}") from None
    try:
        return _materialize(document, lazy_keys)
    except RecursionError:
        raise InvalidInput("malformed JSON body: nested too deeply") from None
    except (KeyError, ValueError):  # a key simdjson cannot look up or decode (a NUL in it, a lone surrogate)
        return _standard(body)


def _standard(body: bytes | memoryview) -> Any:
    try:
        return json.loads(bytes(body))
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(f"malformed JSON body: {exc}") from None


def _reason(exc: Exception) -> str:
    """The parser's message, without simdjson's error code ('DEPTH_ERROR: The JSON document was too deep')."""
    coded = _SIMDJSON_CODE.search(str(exc))
    return coded.group(1) if coded else str(exc)


def _holds_objects(array: simdjson.Array) -> bool:
    return len(array) > 0 and isinstance(array[0], simdjson.Object)


def _materialize(value: Any, lazy_keys: frozenset[str]) -> Any:
    if isinstance(value, simdjson.Object):
        result = {}
        for key in value.keys():  # noqa: SIM118 - items() would convert every value to Python
            item = value[key]
            lazy = key in lazy_keys and is_lazy_array(item) and not _holds_objects(item)
            result[key] = item if lazy else _materialize(item, lazy_keys)
        return result
    if isinstance(value, simdjson.Array):
        if _holds_objects(value):
            return [_materialize(item, lazy_keys) for item in value]
        return value.as_list()
    return value


def is_lazy_array(value: Any) -> bool:
    return isinstance(value, simdjson.Array)


def is_array(value: Any) -> bool:
    """A JSON array, converted or lazy."""
    return isinstance(value, list | simdjson.Array)


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
    """ONNX Runtime string tensors hold text: bytes elements are decoded as UTF-8. Anything else (a JSON number,
    null, true) is refused, as TF Serving and Triton refuse it, rather than read as its spelling ("None")."""
    flat = values.reshape(-1)
    try:
        decoded = [item.decode() if isinstance(item, bytes) else item for item in flat]
    except UnicodeDecodeError:
        raise InvalidInput(f"input {name!r}: a BYTES element is not UTF-8 text, which ONNX string tensors need") \
            from None
    for item in decoded:
        if not isinstance(item, str):
            raise InvalidInput(f"input {name!r} takes text (BYTES, DT_STRING), got {_described(item)}")
    result = np.empty(len(decoded), dtype=object)
    result[:] = decoded
    return result.reshape(values.shape)


def _described(value: Any) -> str:
    """A JSON value as JSON spells it."""
    if value is None:
        return "null"
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, int | float | np.number):
        return f"the number {value}"
    return f"a {type(value).__name__}"


def byte_elements(name: str, values: np.ndarray) -> np.ndarray:
    """BYTES given for an input of numbers, kept as bytes: an image model's image input takes encoded images
    (runtime.encoded_images); any other refuses them by their type."""
    flat = values.reshape(-1)
    if not all(isinstance(item, bytes) for item in flat):
        raise InvalidInput(f"input {name!r} takes numbers or, for an image model, images' bytes; got text")
    return values


_BUFFER_TYPES = {"f": ("d", np.float64), "i": ("i", np.int64), "u": ("u", np.uint64)}


def _nested_shape(value: simdjson.Array) -> list[int]:
    shape = []
    while isinstance(value, simdjson.Array):
        shape.append(len(value))
        if not len(value):
            break
        value = value[0]
    return shape


def _is_regular(value: simdjson.Array, shape: list[int]) -> bool:
    """Every nested list at each depth has the length its first sibling has (no ragged rows)."""
    level = [value]
    for depth, size in enumerate(shape):
        if any(not isinstance(array, simdjson.Array) or len(array) != size for array in level):
            return False
        if depth < len(shape) - 1:
            level = [child for array in level for child in array]
    return True


def _numbers_from_lazy(name: str, value: simdjson.Array, tensor_type: TensorType) -> np.ndarray | None:
    """Read a lazy array of numbers straight into numpy; None when it holds anything else."""
    buffer_type, wide = _BUFFER_TYPES[tensor_type.numpy.kind]
    try:
        flat = np.frombuffer(value.as_buffer(of_type=buffer_type), dtype=wide)
    except (TypeError, ValueError):
        return None
    shape = _nested_shape(value)
    if len(shape) > MAX_DIMENSIONS:
        raise InvalidInput(f"input {name!r} is nested {len(shape)} lists deep; a tensor has at most "
                           f"{MAX_DIMENSIONS} dimensions")
    if flat.size != math.prod(shape) or (len(shape) > 1 and not _is_regular(value, shape)):
        raise InvalidInput(f"input {name!r} cannot be read as {tensor_type.v2}: nested lists of unequal lengths")
    return flat.reshape(shape)


def array_from_json(name: str, value: Any, tensor_type: TensorType) -> np.ndarray:
    """A nested JSON list (or scalar) as an array of the model's element type."""
    if isinstance(value, simdjson.Array):
        if tensor_type.numpy.kind in _BUFFER_TYPES:
            numbers = _numbers_from_lazy(name, value, tensor_type)
            if numbers is not None:
                return exact_numbers(name, numbers, tensor_type)
        value = value.as_list()
    try:
        if tensor_type.is_bytes:
            return text_elements(name, np.array(value, dtype=object))
        values = np.asarray(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidInput(f"input {name!r} cannot be read as {tensor_type.v2}: {exc}") from None
    return exact_numbers(name, values, tensor_type)


def exact_numbers(name: str, values: np.ndarray, tensor_type: TensorType) -> np.ndarray:
    """Numbers sent in a wider type (JSON's, or a protobuf field's) as the model's element type, refused where that
    would change them: strings or nulls for numbers, fractions for integers, integers past the type's range (which
    a cast would wrap: 300 as UINT8 is 44), finite numbers past a float type's range (70000 as FP16 would be
    infinity), anything but true, false, 0 and 1 for BOOL."""
    target, kind = tensor_type.numpy, values.dtype.kind
    if kind not in "biuf":
        raise InvalidInput(f"input {name!r} cannot be read as {tensor_type.v2}: it holds "
                           f"{'text' if kind in 'SU' else 'values that are not numbers (null, or mixed kinds)'}")
    if target.kind in "iu" and kind in "iuf" and values.size:
        if kind == "f" and not (np.isfinite(values).all() and (values == np.trunc(values)).all()):
            raise InvalidInput(f"input {name!r} cannot be read as {tensor_type.v2}: it holds numbers that are not "
                               "whole")
        bounds = np.iinfo(target)
        low, high = values.min(), values.max()
        if low < bounds.min or high > bounds.max:
            raise InvalidInput(f"input {name!r} cannot be read as {tensor_type.v2}: {low if low < bounds.min else high}"
                               f" is outside its range [{bounds.min}, {bounds.max}]")
    elif target.kind == "b" and kind != "b" and values.size and not np.isin(values, (0, 1)).all():
        raise InvalidInput(f"input {name!r} cannot be read as BOOL: it holds numbers other than 0 and 1")
    elif target.kind == "f" and kind in "iuf" and target.itemsize < values.dtype.itemsize and values.size:
        return _finite_narrowed(name, values, tensor_type)
    return values.astype(target, copy=False)


def _finite_narrowed(name: str, values: np.ndarray, tensor_type: TensorType) -> np.ndarray:
    """Numbers as a narrower float type, refused where a finite one would become infinite (70000 as FP16)."""
    with np.errstate(over="ignore"):
        narrowed = values.astype(tensor_type.numpy)
    overflowed = np.isinf(narrowed)
    if not overflowed.any():  # the usual case: one pass over the numbers
        return narrowed
    if values.dtype.kind == "f":
        overflowed &= np.isfinite(values)  # an infinity sent as one stays one
    if overflowed.any():
        bound = float(np.finfo(tensor_type.numpy).max)
        raise InvalidInput(f"input {name!r} cannot be read as {tensor_type.v2}: {values[overflowed][0]:g} is outside "
                           f"its range [{-bound:g}, {bound:g}]")
    return narrowed


def element_count(shape: list[int]) -> int:
    return math.prod(shape)


def array_from_bytes(name: str, buffer: memoryview, tensor_type: TensorType, shape: list[int], *,
                     keep_bytes: bool = False) -> np.ndarray:
    """Raw little-endian tensor bytes as an array, without copying; BYTES use 4-byte length prefixes, and are
    text unless `keep_bytes` (sent for an input of numbers: byte_elements)."""
    count = element_count(shape)
    if tensor_type.is_bytes:
        strings = _length_prefixed(name, buffer, count)
        return (byte_elements(name, strings) if keep_bytes else text_elements(name, strings)).reshape(shape)
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


_LONG_LONGS = {np.dtype(np.longlong).char: np.dtype(np.int64), np.dtype(np.ulonglong).char: np.dtype(np.uint64)}


def json_tensor(array: np.ndarray) -> Any:
    """What orjson can write for a tensor: the array itself when numeric, nested lists for strings. ONNX Runtime's
    64-bit integers are C long longs ('q', 'Q'), whose numpy scalars orjson does not know (the rows of a rank-1
    output are scalars): they are viewed as numpy's int64 and uint64, the same bits. A scalar (rank 0) is written
    as one (TF Serving's columnar `outputs`), not as a list of one."""
    if array.dtype == object or array.ndim == 0:
        return array.tolist()
    if array.dtype.char in _LONG_LONGS:
        array = array.view(_LONG_LONGS[array.dtype.char])
    return np.ascontiguousarray(array)
