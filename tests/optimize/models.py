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
