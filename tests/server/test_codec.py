"""JSON and byte tensor decoding: the fast simdjson path must agree with plain numpy conversion."""

from __future__ import annotations

import numpy as np
import pytest

from ortserve.dtypes import BY_V2
from ortserve.errors import InvalidInput
from ortserve.server.codec import array_from_bytes, array_from_json, array_to_bytes, loads

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
