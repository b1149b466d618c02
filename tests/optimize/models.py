"""Small ONNX models with a known quantization weak spot, built with onnx.helper."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ortserve.examples.models import IR_VERSION, OPSET

FEATURES, HIDDEN, CLASSES = 16, 32, 10


def outlier_channel(seed: int = 0) -> onnx.ModelProto:
    """x -> MatMul -> h -> Mul(rescale) -> g -> MatMul -> logits, where h's first channel is 1000x the others.

    The Mul scales that channel back, so g and the logits have ordinary ranges. In INT8, h would be quantized with
    one scale for all channels (activations are per-tensor), set by the outlier: the other channels round to zero
    and the logits lose their information. Keeping only the node named `rescale` in FP32 takes the
    Quantize/Dequantize pair off h and restores them.
    """
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((FEATURES, HIDDEN)).astype(np.float32) / 4
    w1[:, 0] *= 1000.0
    scale = np.ones(HIDDEN, np.float32)
    scale[0] = 1e-3
    w2 = rng.standard_normal((HIDDEN, CLASSES)).astype(np.float32) / 6
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="expand"),
             helper.make_node("Mul", ["h", "scale"], ["g"], name="rescale"),
             helper.make_node("Relu", ["g"], ["r"], name="activate"),
             helper.make_node("MatMul", ["r", "w2"], ["logits"], name="classify")]
    graph = helper.make_graph(
        nodes, "outlier_channel",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", FEATURES])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES])],
        initializer=[numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(scale, "scale"),
                     numpy_helper.from_array(w2, "w2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    onnx.checker.check_model(model, full_check=True)
    return model


def embedding_bag(token_rows: int = 7, type_rows: int = 2) -> onnx.ModelProto:
    """Token ids and type ids (int64 [batch, 5]) embedded by Gathers of small tables, summed, then a MatMul: the
    shape of a text encoder's front. The token ids reach their table through a Cast and a Where that adds the row
    count to negative ids (Keras 3's Embedding); the type ids directly. An id at or past a table's rows fails in
    ONNX Runtime, so random ids must stay below each table's rows."""
    rng = np.random.default_rng(0)
    tokens = rng.standard_normal((token_rows, HIDDEN)).astype(np.float32)
    types = rng.standard_normal((type_rows, HIDDEN)).astype(np.float32)
    weights = rng.standard_normal((HIDDEN, CLASSES)).astype(np.float32) / 6
    nodes = [helper.make_node("Cast", ["token_ids"], ["ids32"], to=TensorProto.INT32),
             helper.make_node("Less", ["ids32", "zero"], ["negative"]),
             helper.make_node("Add", ["ids32", "rows"], ["wrapped"]),
             helper.make_node("Where", ["negative", "wrapped", "ids32"], ["ids"]),
             helper.make_node("Gather", ["tokens", "ids"], ["token_vectors"]),
             helper.make_node("Gather", ["types", "type_ids"], ["type_vectors"]),
             helper.make_node("Add", ["token_vectors", "type_vectors"], ["vectors"]),
             helper.make_node("ReduceMean", ["vectors"], ["pooled"], axes=[1], keepdims=0),
             helper.make_node("MatMul", ["pooled", "weights"], ["logits"])]
    graph = helper.make_graph(
        nodes, "embedding_bag",
        [helper.make_tensor_value_info("token_ids", TensorProto.INT64, ["batch", 5]),
         helper.make_tensor_value_info("type_ids", TensorProto.INT64, ["batch", 5])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES])],
        initializer=[numpy_helper.from_array(tokens, "tokens"), numpy_helper.from_array(types, "types"),
                     numpy_helper.from_array(weights, "weights"),
                     numpy_helper.from_array(np.array(0, np.int32), "zero"),
                     numpy_helper.from_array(np.array(token_rows, np.int32), "rows")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    onnx.checker.check_model(model, full_check=True)
    return model
