"""A zero Pad before a MaxPool (Keras' ResNetV2 stem) served as the graph says: the border of an all-negative
input pools to 0, which ONNX Runtime's Pad_Fusion turned into the window's negative maximum."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ortserve
from ortserve.examples.models import IR_VERSION, OPSET, save
from ortserve.runtime.ort_guard import PAD_FUSION, unsafe_optimizers


def _padded_pool(value: float | None, consumer: str = "MaxPool") -> onnx.ModelProto:
    """x [batch, 2, 6, 6] -> Pad(1 on each side, `value`; None: the default) -> 3x3 MaxPool (or a Conv)."""
    initializers = [numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads")]
    pad_inputs = ["x", "pads"]
    if value is not None:
        initializers.append(numpy_helper.from_array(np.array(value, np.float32), "value"))
        pad_inputs.append("value")
    nodes = [helper.make_node("Pad", pad_inputs, ["padded"], mode="constant")]
    if consumer == "MaxPool":
        nodes.append(helper.make_node("MaxPool", ["padded"], ["y"], kernel_shape=[3, 3], strides=[1, 1]))
    else:
        initializers.append(numpy_helper.from_array(np.ones((2, 2, 3, 3), np.float32), "w"))
        nodes.append(helper.make_node("Conv", ["padded", "w"], ["y"], kernel_shape=[3, 3]))
    graph = helper.make_graph(
        nodes, "padded_pool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2, 6, 6])],
        initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    onnx.checker.check_model(model, full_check=True)
    return model


def _reference(x: np.ndarray) -> np.ndarray:
    """Pad with zeros, then the max of every 3x3 window."""
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))
    return windows.max(axis=(-2, -1))


@pytest.mark.parametrize("value", [None, 0.0])
def test_a_zero_pad_before_max_pool_is_found(tmp_path: Path, value: float | None) -> None:
    path = save(_padded_pool(value), tmp_path, "m")
    assert unsafe_optimizers(path) == [PAD_FUSION]


@pytest.mark.parametrize(("value", "consumer"), [(-np.inf, "MaxPool"), (0.0, "Conv")])
def test_pads_the_fusion_gets_right_keep_it(tmp_path: Path, value: float, consumer: str) -> None:
    assert unsafe_optimizers(save(_padded_pool(value, consumer), tmp_path, "m")) == []


def test_a_file_that_is_not_a_model_is_left_to_onnx_runtime(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"not an onnx model")
    assert unsafe_optimizers(tmp_path / "model.onnx") == []
    assert unsafe_optimizers(tmp_path / "missing.onnx") == []


def test_served_max_pool_sees_the_zero_padding(tmp_path: Path) -> None:
    save(_padded_pool(0.0), tmp_path, "padded_pool")
    x = -np.random.default_rng(0).uniform(0.1, 1.0, (3, 2, 6, 6)).astype(np.float32)  # all negative
    expected = _reference(x)
    assert (expected[:, :, 0, :] == 0).all()  # every border window holds a padded zero
    with ortserve.Engine(tmp_path) as engine:
        served = engine.predict("padded_pool", x)["y"]
    np.testing.assert_array_equal(served, expected)
