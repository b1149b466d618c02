"""TensorFlow's TensorProto to numpy and back, in every encoding TF Serving clients send."""

from __future__ import annotations

import math

import numpy as np

from ortserve.dtypes import BY_TF_ENUM, TensorType, from_numpy
from ortserve.errors import InvalidInput
from ortserve.protos.tensorflow.core.framework.tensor_pb2 import TensorProto
from ortserve.server.codec import byte_elements, exact_numbers, text_elements

# Which repeated field carries the values of each dtype when tensor_content is empty (tensor.proto).
_TYPED_FIELD = {
    "DT_FLOAT": "float_val", "DT_DOUBLE": "double_val", "DT_INT32": "int_val", "DT_INT16": "int_val",
    "DT_INT8": "int_val", "DT_UINT8": "int_val", "DT_UINT16": "int_val", "DT_INT64": "int64_val",
    "DT_BOOL": "bool_val", "DT_HALF": "half_val", "DT_STRING": "string_val", "DT_UINT32": "uint32_val",
    "DT_UINT64": "uint64_val",
}


def _tensor_type(name: str, proto: TensorProto) -> TensorType:
    tensor_type = BY_TF_ENUM.get(proto.dtype)
    if tensor_type is None:
        raise InvalidInput(f"input {name!r}: TensorProto dtype {proto.dtype} is not supported")
    return tensor_type


def to_numpy(name: str, proto: TensorProto, *, keep_bytes: bool = False) -> np.ndarray:
    """The tensor as an array; strings as text, or as bytes with `keep_bytes` (an input of numbers, which only
    an image model's image input takes as strings: codec.byte_elements)."""
    tensor_type = _tensor_type(name, proto)
    shape = [dim.size for dim in proto.tensor_shape.dim]
    if any(size < 0 for size in shape):
        raise InvalidInput(f"input {name!r}: tensor_shape {shape} has a negative dimension")
    count = math.prod(shape)
    if proto.tensor_content and not tensor_type.is_bytes:
        content = proto.tensor_content
        expected = count * tensor_type.numpy.itemsize
        if len(content) != expected:
            raise InvalidInput(f"input {name!r}: tensor_content has {len(content)} bytes, but shape {shape} of "
                               f"{tensor_type.tf} needs {expected}")
        return np.frombuffer(content, dtype=tensor_type.numpy).reshape(shape)
    values = getattr(proto, _TYPED_FIELD[tensor_type.tf])
    if tensor_type.is_bytes:
        strings = np.array(list(values), dtype=object)
        array = byte_elements(name, strings) if keep_bytes else text_elements(name, strings)
    elif tensor_type.tf == "DT_HALF":
        array = np.array(values, dtype=np.uint16).view(np.float16)
    else:  # int_val holds DT_INT8 to DT_UINT16 as int32: a value past the type's range is refused, not wrapped
        array = exact_numbers(name, np.array(values), tensor_type)
    if array.size == count:
        return array.reshape(shape)
    if len(values) == 1:  # a single value stands for the whole shape, as TensorFlow reads it
        return np.full(shape, array[0], dtype=array.dtype)
    raise InvalidInput(f"input {name!r}: {len(values)} values given, but shape {shape} needs {count}")


def from_numpy_array(array: np.ndarray) -> TensorProto:
    tensor_type = from_numpy(array.dtype)
    proto = TensorProto(dtype=tensor_type.tf_enum)  # type: ignore[arg-type]
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    if tensor_type.is_bytes:
        proto.string_val.extend(item if isinstance(item, bytes) else str(item).encode() for item in array.flat)
    else:
        proto.tensor_content = np.ascontiguousarray(array).tobytes()
    return proto
