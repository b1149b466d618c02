"""ONNX models built with onnx.helper and seeded random weights (no framework, nothing downloaded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 10  # onnxruntime 1.31 reads IR versions up to 13; onnx 1.23 writes 14 unless told


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                              producer_name="ortserve")
    onnx.checker.check_model(model, full_check=True)
    return model


def mlp(inputs: int = 784, hidden: int = 256, outputs: int = 10, seed: int = 0) -> onnx.ModelProto:
    """Dense(hidden) -> ReLU -> Dense(outputs), with a dynamic batch dimension."""
    rng = np.random.default_rng(seed)
    weights = [
        numpy_helper.from_array((rng.standard_normal((inputs, hidden)) / np.sqrt(inputs)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal(hidden).astype(np.float32) * 0.1, "b1"),
        numpy_helper.from_array((rng.standard_normal((hidden, outputs)) / np.sqrt(hidden)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.standard_normal(outputs).astype(np.float32) * 0.1, "b2"),
    ]
    nodes = [
        helper.make_node("Gemm", ["input", "w1", "b1"], ["hidden"]),
        helper.make_node("Relu", ["hidden"], ["activated"]),
        helper.make_node("Gemm", ["activated", "w2", "b2"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", inputs])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", outputs])],
        initializer=weights,
    )
    return _model(graph)


def multi_io() -> onnx.ModelProto:
    """Several inputs and outputs of several types, for protocol tests.

    total = a + float(b); scaled = half * 2 (FP16); label_bytes = text (strings, named for TF Serving's b64 rule).
    """
    two = numpy_helper.from_array(np.array(2, dtype=np.float16), "two")
    nodes = [
        helper.make_node("Cast", ["b"], ["b_float"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["a", "b_float"], ["total"]),
        helper.make_node("Mul", ["half", "two"], ["scaled"]),
        helper.make_node("Identity", ["text"], ["label_bytes"]),
    ]
    graph = helper.make_graph(
        nodes, "multi_io",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("b", TensorProto.INT64, ["batch", 4]),
            helper.make_tensor_value_info("half", TensorProto.FLOAT16, ["batch", 3]),
            helper.make_tensor_value_info("text", TensorProto.STRING, ["batch"]),
        ],
        [
            helper.make_tensor_value_info("total", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("scaled", TensorProto.FLOAT16, ["batch", 3]),
            helper.make_tensor_value_info("label_bytes", TensorProto.STRING, ["batch"]),
        ],
        initializer=[two],
    )
    return _model(graph)


def fixed_shape(scale: float = 1.0) -> onnx.ModelProto:
    """A model with no batch dimension: y = x * scale for x of shape [2, 3]."""
    factor = numpy_helper.from_array(np.array(scale, dtype=np.float32), "factor")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "factor"], ["y"])], "fixed_shape",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        initializer=[factor],
    )
    return _model(graph)


def flattened(features: int = 4) -> onnx.ModelProto:
    """A model whose shapes allow batching but whose output has no row per input row: x of [batch, features]
    flattened to y of [batch * features], declared with a dynamic first dimension as exporters write it (a
    detector's boxes of every image, the indices of NonZero are alike)."""
    shape = numpy_helper.from_array(np.array([-1], dtype=np.int64), "flat_shape")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "flat_shape"], ["y"])], "flattened",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["values"])],
        initializer=[shape],
    )
    return _model(graph)


def total(features: int = 4) -> onnx.ModelProto:
    """A scalar output: the sum of every element of x, of [batch, features] (served unbatched: the output has no
    batch dimension)."""
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x"], ["sum"], keepdims=0)], "total",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("sum", TensorProto.FLOAT, [])],
    )
    return _model(graph)


def dense_stack(layers: int = 16, width: int = 1024, seed: int = 0, *, distinct_weights: bool = False
                ) -> onnx.ModelProto:
    """`layers` MatMul + Tanh layers on `width` features, sharing one weight matrix, with a dynamic batch
    dimension: a small file whose run time grows with `layers` (about 2 * layers * width^2 FLOPs a row), for
    tests of queues, deadlines and shutdown. `distinct_weights`: a matrix per layer, so that the weights outgrow
    the caches and are read from memory once a batch, whatever its rows (memory-bound, as a language model's
    layers are: a batch of 8 costs little more than one row)."""
    rng = np.random.default_rng(seed)
    count = layers if distinct_weights else 1
    weights = [numpy_helper.from_array((rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32),
                                       f"w{index}" if distinct_weights else "w") for index in range(count)]
    nodes, x = [], "input"
    for layer in range(layers):
        product, activated = f"product{layer}", ("output" if layer == layers - 1 else f"activated{layer}")
        nodes += [helper.make_node("MatMul", [x, weights[layer % count].name], [product]),
                  helper.make_node("Tanh", [product], [activated])]
        x = activated
    graph = helper.make_graph(
        nodes, "dense_stack",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", width])],
        initializer=weights,
    )
    return _model(graph)


class _ResNetBuilder:
    """ResNet-50 v1.5 (bottleneck blocks [3, 4, 6, 3]) with batch norm folded into the convolutions."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.weights: list[onnx.TensorProto] = []
        self.count = 0

    def _name(self, kind: str) -> str:
        self.count += 1
        return f"{kind}{self.count}"

    def conv(self, x: str, channels_in: int, channels_out: int, kernel: int, stride: int = 1,
             relu: bool = True) -> str:
        fan_in = channels_in * kernel * kernel
        # He initialisation, damped so that activations stay finite through 50 layers of random weights.
        w = self.rng.standard_normal((channels_out, channels_in, kernel, kernel)) * np.sqrt(1.0 / fan_in)
        b = self.rng.standard_normal(channels_out) * 0.01
        wname, bname, out = self._name("w"), self._name("b"), self._name("conv")
        self.weights += [numpy_helper.from_array(w.astype(np.float32), wname),
                         numpy_helper.from_array(b.astype(np.float32), bname)]
        pad = kernel // 2
        self.nodes.append(helper.make_node("Conv", [x, wname, bname], [out], kernel_shape=[kernel, kernel],
                                           strides=[stride, stride], pads=[pad] * 4))
        if not relu:
            return out
        activated = self._name("relu")
        self.nodes.append(helper.make_node("Relu", [out], [activated]))
        return activated

    def bottleneck(self, x: str, channels_in: int, width: int, stride: int) -> str:
        out_channels = width * 4
        y = self.conv(x, channels_in, width, 1)
        y = self.conv(y, width, width, 3, stride)
        y = self.conv(y, width, out_channels, 1, relu=False)
        shortcut = x
        if stride != 1 or channels_in != out_channels:
            shortcut = self.conv(x, channels_in, out_channels, 1, stride, relu=False)
        added, activated = self._name("add"), self._name("relu")
        self.nodes += [helper.make_node("Add", [y, shortcut], [added]),
                       helper.make_node("Relu", [added], [activated])]
        return activated

    def build(self, classes: int) -> onnx.ModelProto:
        x = self.conv("input", 3, 64, 7, 2)
        pooled = self._name("pool")
        self.nodes.append(helper.make_node("MaxPool", [x], [pooled], kernel_shape=[3, 3], strides=[2, 2],
                                           pads=[1, 1, 1, 1]))
        x, channels = pooled, 64
        for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            for block in range(blocks):
                x = self.bottleneck(x, channels, width, stride if block == 0 else 1)
                channels = width * 4
        self.nodes += [helper.make_node("GlobalAveragePool", [x], ["gap"]),
                       helper.make_node("Flatten", ["gap"], ["features"])]
        fc = self.rng.standard_normal((classes, channels)) / np.sqrt(channels)
        self.weights += [numpy_helper.from_array(fc.astype(np.float32), "fc_w"),
                         numpy_helper.from_array(np.zeros(classes, np.float32), "fc_b")]
        self.nodes.append(helper.make_node("Gemm", ["features", "fc_w", "fc_b"], ["logits"], transB=1))
        graph = helper.make_graph(
            self.nodes, "resnet50",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 224, 224])],
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
            initializer=self.weights,
        )
        return _model(graph)


def resnet50(classes: int = 1000, seed: int = 0) -> onnx.ModelProto:
    return _ResNetBuilder(seed).build(classes)


def save(model: onnx.ModelProto, repository: Path, name: str, version: int = 1) -> Path:
    """Write the model as REPO/<name>/<version>/model.onnx."""
    path = repository / name / str(version) / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
