"""One table of tensor element types, as each wire format and ONNX Runtime name them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ortserve.errors import InvalidInput


@dataclass(frozen=True)
class TensorType:
    onnx: str  # as onnxruntime reports it: "tensor(float)"
    numpy: np.dtype
    v2: str  # KServe V2 / Triton datatype: "FP32"
    tf: str  # TensorFlow DataType name: "DT_FLOAT"
    tf_enum: int  # tensorflow.DataType enum value, as in types.proto

    @property
    def triton_config(self) -> str:
        """Triton model-config data type: "TYPE_FP32"; BYTES is TYPE_STRING there."""
        return "TYPE_STRING" if self.v2 == "BYTES" else f"TYPE_{self.v2}"

    @property
    def is_bytes(self) -> bool:
        return self.v2 == "BYTES"


_TYPES = (
    TensorType("tensor(float)", np.dtype(np.float32), "FP32", "DT_FLOAT", 1),
    TensorType("tensor(double)", np.dtype(np.float64), "FP64", "DT_DOUBLE", 2),
    TensorType("tensor(float16)", np.dtype(np.float16), "FP16", "DT_HALF", 19),
    TensorType("tensor(int8)", np.dtype(np.int8), "INT8", "DT_INT8", 6),
    TensorType("tensor(int16)", np.dtype(np.int16), "INT16", "DT_INT16", 5),
    TensorType("tensor(int32)", np.dtype(np.int32), "INT32", "DT_INT32", 3),
    TensorType("tensor(int64)", np.dtype(np.int64), "INT64", "DT_INT64", 9),
    TensorType("tensor(uint8)", np.dtype(np.uint8), "UINT8", "DT_UINT8", 4),
    TensorType("tensor(uint16)", np.dtype(np.uint16), "UINT16", "DT_UINT16", 17),
    TensorType("tensor(uint32)", np.dtype(np.uint32), "UINT32", "DT_UINT32", 22),
    TensorType("tensor(uint64)", np.dtype(np.uint64), "UINT64", "DT_UINT64", 23),
    TensorType("tensor(bool)", np.dtype(np.bool_), "BOOL", "DT_BOOL", 10),
    TensorType("tensor(string)", np.dtype(object), "BYTES", "DT_STRING", 7),
)

BY_ONNX = {t.onnx: t for t in _TYPES}
BY_V2 = {t.v2: t for t in _TYPES}
BY_TF_ENUM = {t.tf_enum: t for t in _TYPES}
BY_TF_NAME = {t.tf: t for t in _TYPES}
BY_NUMPY = {t.numpy: t for t in _TYPES}


def from_onnx(name: str) -> TensorType:
    try:
        return BY_ONNX[name]
    except KeyError:
        raise InvalidInput(f"unsupported ONNX tensor type {name}") from None


def from_v2(name: str) -> TensorType:
    try:
        return BY_V2[name]
    except KeyError:
        raise InvalidInput(
            f"unsupported datatype {name!r}; expected one of {', '.join(sorted(BY_V2))}"
        ) from None


def from_numpy(dtype: np.dtype) -> TensorType:
    if dtype.kind in "SUO":
        return BY_V2["BYTES"]
    try:
        return BY_NUMPY[dtype]
    except KeyError:
        raise InvalidInput(f"unsupported tensor dtype {dtype}") from None
