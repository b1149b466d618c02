"""Finds INT8 models whose answers lose accuracy on this CPU: u8 activations times s8 weights of the full 8 bits.

Without VNNI (AVX2, or AVX-512 without VNNI: AMD EPYC before Zen 4, Intel before Cascade Lake), ONNX Runtime
multiplies u8 by s8 with an instruction that adds pairs of products into 16 bits and saturates: 255 x 127 x 2 does
not fit, 255 x 64 x 2 does. A model quantized elsewhere with 8-bit weights then runs with errors its float
emulation does not have (EfficientNet-Lite0: logits off by up to 6, top-1 agreement 68.8 % against 79.2 %,
docs/benchmarks.md). `ortserve quantize` keeps weights to 7 bits on such CPUs; a model made on a VNNI machine and
served on one without is the case to report, with what to do.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import numpy_helper

log = logging.getLogger(__name__)

# the weight input of each integer kernel that multiplies u8 by s8 (QDQ weights reach the kernel through
# DequantizeLinear, which ONNX Runtime fuses into QLinearConv, QLinearMatMul or QGemm)
WEIGHT_INPUTS = {"DequantizeLinear": 0, "QLinearConv": 3, "QLinearMatMul": 3, "QGemm": 3, "MatMulInteger": 1,
                 "ConvInteger": 1, "DynamicQuantizeMatMul": 1, "MatMulIntegerToFloat": 1}
# ops whose quantized activations are u8: QuantizeLinear with a u8 zero point, or the dynamic ones (always u8)
U8_ACTIVATION_OPS = {"DynamicQuantizeLinear", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"}
SEVEN_BIT_LIMIT = 64


def saturating_weights(graph: onnx.GraphProto) -> list[str]:
    """Names of the s8 weight initializers that use more than 7 bits, in a graph with u8 activations; [] when
    the model cannot saturate (FP32, U8 or 7-bit weights, S8 activations). Weights stored outside the file are
    not read (external data), so not counted."""
    initializers = {initializer.name: initializer for initializer in graph.initializer}
    if not _has_u8_activations(graph, initializers):
        return []
    found: list[str] = []
    for node in graph.node:
        position = WEIGHT_INPUTS.get(node.op_type)
        if position is None or len(node.input) <= position:
            continue
        weight = initializers.get(node.input[position])
        if weight is None or weight.data_type != onnx.TensorProto.INT8 or weight.name in found:
            continue
        if weight.data_location == onnx.TensorProto.EXTERNAL:
            continue
        values = numpy_helper.to_array(weight)
        if values.size and int(np.abs(values.astype(np.int16)).max()) > SEVEN_BIT_LIMIT:
            found.append(weight.name)
    return found


def _has_u8_activations(graph: onnx.GraphProto, initializers: dict[str, onnx.TensorProto]) -> bool:
    for node in graph.node:
        if node.op_type in U8_ACTIVATION_OPS:
            return True
        if node.op_type != "QuantizeLinear":
            continue
        if len(node.input) < 3 or not node.input[2]:  # no zero point: u8, ONNX's default
            return True
        zero_point = initializers.get(node.input[2])
        if zero_point is not None and zero_point.data_type == onnx.TensorProto.UINT8:
            return True
    return False


def describe(model: str, path: str, weights: list[str]) -> str:
    shown = ", ".join(weights[:3]) + (f" and {len(weights) - 3} more" if len(weights) > 3 else "")
    return (f"model {model!r} ({path}): {len(weights)} INT8 weight tensor(s) use all 8 bits with u8 activations "
            f"({shown}), and this CPU has no VNNI: ONNX Runtime's u8 x s8 kernels saturate here and the answers "
            f"lose accuracy. Quantize it on this machine (`ortserve quantize` keeps weights to 7 bits on CPUs "
            f"without VNNI) or with --reduce-range, or serve it on a CPU with AVX-512 VNNI or AVX-VNNI")
