"""Hypothesis strategies for requests to every front end: valid shapes of each protocol, then mutated in values,
types, shapes, nesting, lengths and headers, with raw bytes that are nothing at all."""

from __future__ import annotations

import base64
import json
from typing import Any

from hypothesis import strategies as st

V2_DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32",
                "FP64", "BYTES", "BF16"]
MODELS = ["mlp", "multi", "fixed", "versioned", "bad_config", "nope"]
INPUT_NAMES = ["input", "a", "b", "half", "text", "x"]

names = st.one_of(st.sampled_from(INPUT_NAMES), st.text(max_size=8))
path_segment = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-.~%", min_size=1, max_size=10)
numbers = st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=True, allow_infinity=True))
json_leaf = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=12))
json_value = st.recursive(json_leaf, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                             st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                          max_leaves=24)
dims = st.lists(st.one_of(st.integers(min_value=-3, max_value=12), st.integers(min_value=-(2**63), max_value=2**64)),
                max_size=5)
# tensor data: a flat row of numbers (often the right kind), nested lists, or anything
tensor_data = st.one_of(st.lists(numbers, max_size=40), st.lists(st.lists(numbers, max_size=8), max_size=4),
                        json_value)


def _text_of(value: Any) -> str:
    return json.dumps(value, allow_nan=True)


v2_tensor = st.fixed_dictionaries(
    {"name": names, "datatype": st.one_of(st.sampled_from(V2_DATATYPES), st.text(max_size=5)), "shape": dims,
     "data": tensor_data},
    optional={"parameters": st.dictionaries(st.sampled_from(["binary_data_size", "binary_data", "x"]), json_value,
                                            max_size=2)})
v2_body = st.fixed_dictionaries(
    {"inputs": st.one_of(st.lists(v2_tensor, max_size=3), json_value)},
    optional={"id": json_value,
              "outputs": st.lists(st.fixed_dictionaries({"name": names}, optional={"parameters": json_value}),
                                  max_size=2),
              "parameters": st.dictionaries(st.sampled_from(["timeout", "binary_data_output", "priority", "x"]),
                                            json_value, max_size=2)})
b64_value = st.fixed_dictionaries({"b64": st.one_of(st.text(max_size=16), st.binary(max_size=12).map(
    lambda raw: base64.b64encode(raw).decode()), json_value)})
tfs_body = st.one_of(
    st.fixed_dictionaries({"instances": st.lists(st.fixed_dictionaries(
        {"text": st.one_of(b64_value, st.lists(b64_value, max_size=3)), "a": tensor_data}), max_size=3)}),
    st.fixed_dictionaries({"inputs": st.fixed_dictionaries({"text": st.lists(b64_value, max_size=3)})}),
    st.fixed_dictionaries({"instances": st.one_of(st.lists(st.lists(numbers, max_size=30), max_size=3), json_value)},
                          optional={"signature_name": st.one_of(st.just("serving_default"), st.text(max_size=8))}),
    st.fixed_dictionaries({"inputs": st.one_of(st.dictionaries(names, tensor_data, max_size=3), json_value)}),
    json_value)

# a JSON body: the protocol's shape, or any JSON, or bytes that are not JSON
v2_json = st.one_of(v2_body.map(_text_of), json_value.map(_text_of), st.binary(max_size=300))
tfs_json = st.one_of(tfs_body.map(_text_of), st.binary(max_size=300))
headers = st.dictionaries(st.sampled_from(["content-type", "x-routing-key", "authorization", "accept"]),
                          st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=30),
                          max_size=3)


@st.composite
def v2_binary(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    """A binary-tensor V2 request: a JSON header, raw tensor bytes after it, and a header-length header that may
    lie."""
    header = draw(v2_body.map(_text_of)).encode()
    tail = draw(st.binary(max_size=3200))
    length = draw(st.one_of(st.just(str(len(header))), st.integers(min_value=-5, max_value=10**12).map(str),
                            st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=6)))
    return header + tail, {"inference-header-content-length": length, "content-type": "application/octet-stream"}
