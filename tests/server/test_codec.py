"""JSON and byte tensor decoding: the fast simdjson path must agree with plain numpy conversion."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from ortserve.dtypes import BY_V2
from ortserve.errors import InvalidInput
from ortserve.protos.inference import grpc_service_pb2 as grpc_pb
from ortserve.protos.tensorflow.core.framework.tensor_pb2 import TensorProto
from ortserve.server.codec import array_from_bytes, array_from_json, array_to_bytes, loads
from ortserve.server.grpc_v2 import _typed_contents
from ortserve.server.tensor_proto import to_numpy

LAZY = frozenset({"data"})


@pytest.mark.parametrize(("datatype", "text", "expected"), [
    ("FP32", b"[[1, 2.5], [-3e-2, 4]]", [[1, 2.5], [-3e-2, 4]]),
    ("FP64", b"[0.1, 0.2, 0.30000000000000004]", [0.1, 0.2, 0.30000000000000004]),
    ("FP16", b"[1.5, 65504]", [1.5, 65504]),
    ("INT64", b"[9223372036854775807, -9223372036854775808]", [2**63 - 1, -(2**63)]),
    ("INT8", b"[[-128, 127]]", [[-128, 127]]),
    ("UINT64", b"[18446744073709551615]", [2**64 - 1]),
    ("BOOL", b"[true, false]", [True, False]),
    ("FP32", b"[true, 1]", [1, 1]),
])
def test_lazy_arrays_decode_like_numpy(datatype: str, text: bytes, expected: list) -> None:
    tensor_type = BY_V2[datatype]
    document = loads(b'{"data": ' + text + b"}", LAZY)
    array = array_from_json("x", document["data"], tensor_type)
    reference = np.asarray(expected, dtype=tensor_type.numpy)
    assert array.dtype == reference.dtype
    np.testing.assert_array_equal(array, reference)


@pytest.mark.parametrize(("datatype", "text", "words"), [
    ("INT64", b"[1.5, 2]", "numbers that are not whole"),
    ("UINT8", b"[300, 1]", "300 is outside its range [0, 255]"),
    ("INT8", b"[[-129, 0]]", "-129 is outside its range [-128, 127]"),
    ("INT64", b"[9223372036854775808]", "outside its range"),
    ("UINT64", b"[-1]", "-1 is outside its range"),
    ("FP16", b"[1, 70000]", "70000 is outside its range [-65504, 65504]"),
    ("FP16", b"[-65520]", "-65520 is outside its range"),
    ("FP32", b"[1e39]", "1e+39 is outside its range [-3.40282e+38, 3.40282e+38]"),
    ("FP32", b"[null, 1]", "not numbers"),
    ("FP32", b'["1.5"]', "it holds text"),
    ("BOOL", b"[2, 0]", "numbers other than 0 and 1"),
])
def test_numbers_a_cast_would_change_are_refused(datatype: str, text: bytes, words: str) -> None:
    """300 cast to UINT8 is 44, 1.5 to INT64 is 1, null to FP32 is NaN: each was served silently."""
    document = loads(b'{"data": ' + text + b"}", LAZY)
    with pytest.raises(InvalidInput, match=f"input 'x' cannot be read as {datatype}: .*{re.escape(words)}"):
        array_from_json("x", document["data"], BY_V2[datatype])
    with pytest.raises(InvalidInput, match=re.escape(words)):  # the same as a Python list (TF Serving's rows)
        array_from_json("x", json.loads(text), BY_V2[datatype])


@pytest.mark.parametrize(("datatype", "text", "expected"), [
    ("INT64", b"[1.0, -2.0]", [1, -2]), ("BOOL", b"[0, 1]", [False, True]), ("UINT8", b"[0, 255]", [0, 255]),
    ("FP16", b"[65504, -65504, 0.1]", [65504, -65504, 0.1]), ("FP32", b"[3.4e38, 1e-50]", [3.4e38, 0])])
def test_numbers_that_keep_their_value_are_taken(datatype: str, text: bytes, expected: list) -> None:
    array = array_from_json("x", loads(b'{"data": ' + text + b"}", LAZY)["data"], BY_V2[datatype])
    np.testing.assert_array_equal(array, np.asarray(expected, dtype=BY_V2[datatype].numpy))


def test_protobuf_integers_past_a_narrow_type_are_refused() -> None:
    """gRPC's int_contents and TF Serving's int_val carry INT8 to UINT16 as int32."""
    tensor = grpc_pb.ModelInferRequest.InferInputTensor(name="x", datatype="UINT8", shape=[2])
    tensor.contents.uint_contents.extend([300, 1])
    with pytest.raises(InvalidInput, match="300 is outside its range"):
        _typed_contents(tensor, [2])
    proto = TensorProto(dtype=BY_V2["INT8"].tf_enum)
    proto.tensor_shape.dim.add(size=2)
    proto.int_val.extend([-5, 7])
    np.testing.assert_array_equal(to_numpy("x", proto), np.array([-5, 7], np.int8))
    proto.int_val[0] = -200
    with pytest.raises(InvalidInput, match="-200 is outside its range"):
        to_numpy("x", proto)


@pytest.mark.parametrize("text", [b"[[1, 2, 3], [4]]", b"[[1], [2, 3], []]"])
def test_ragged_lists_are_refused(text: bytes) -> None:
    document = loads(b'{"data": ' + text + b"}", LAZY)
    with pytest.raises(InvalidInput, match=r"input 'x' cannot be read as FP32: .*(inhomogeneous|unequal lengths)"):
        array_from_json("x", document["data"], BY_V2["FP32"])


def test_strings_where_numbers_belong_name_the_input() -> None:
    document = loads(b'{"data": ["a", "b"]}', LAZY)
    with pytest.raises(InvalidInput, match="input 'pixels' cannot be read as FP32"):
        array_from_json("pixels", document["data"], BY_V2["FP32"])


def test_non_finite_numbers_parse() -> None:
    document = loads(b'{"data": [NaN, Infinity, -Infinity]}', LAZY)
    array = array_from_json("x", document["data"], BY_V2["FP32"])
    assert np.isnan(array[0]) and array[1] == np.inf and array[2] == -np.inf


def test_malformed_json_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="malformed JSON"):
        loads(b'{"data": [1,')


def test_bytes_round_trip_with_length_prefixes() -> None:
    values = np.array(["", "héllo", "x" * 300], dtype=object)
    wire = bytes(array_to_bytes(values))
    assert wire[:4] == b"\0\0\0\0"
    decoded = array_from_bytes("t", memoryview(wire), BY_V2["BYTES"], [3])
    assert decoded.tolist() == ["", "héllo", "x" * 300]


def test_numeric_bytes_are_a_view_not_a_copy() -> None:
    raw = bytearray(np.arange(6, dtype=np.float32).tobytes())
    array = array_from_bytes("t", memoryview(raw), BY_V2["FP32"], [2, 3])
    raw[0:4] = np.float32(42).tobytes()
    assert array[0, 0] == 42
