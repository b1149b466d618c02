"""Models stamped by a newer onnx than ONNX Runtime reads (runtime.onnx_versions)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ortserve
from ortserve.runtime import onnx_versions


def _matmul_relu(weights: np.ndarray) -> onnx.ModelProto:
    """Built as a user would with the current onnx: make_model's own (newest) IR version and opset."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", weights.shape[0]])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", weights.shape[1]])
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])]
    return helper.make_model(helper.make_graph(nodes, "matmul_relu", [x], [y], [numpy_helper.from_array(weights, "w")]))


@pytest.mark.parametrize("external", [False, True], ids=["weights-inside", "external-data"])
def test_a_model_from_a_newer_onnx_is_served_as_the_versions_onnx_runtime_reads(tmp_path: Path, external: bool,
                                                                               caplog: pytest.LogCaptureFixture
                                                                               ) -> None:
    most_ir, most_opset = onnx_versions.runtime_limits()
    assert most_ir is not None and most_opset is not None
    weights = np.random.default_rng(1).standard_normal((6, 4)).astype(np.float32)
    model = _matmul_relu(weights)
    if model.ir_version <= most_ir and model.opset_import[0].version <= most_opset:
        pytest.skip("this onnx writes versions this onnxruntime reads")
    path = tmp_path / "model.onnx"
    onnx.save(model, path, save_as_external_data=external, size_threshold=0, location="weights.bin")
    rows = np.random.default_rng(2).standard_normal((3, 6)).astype(np.float32)
    with caplog.at_level(logging.WARNING, logger="ortserve.runtime.onnx_versions"), \
            ortserve.Engine.from_file(path, name="newer") as engine:
        answer = engine.predict("newer", rows)["y"]
    np.testing.assert_allclose(answer, np.maximum(rows @ weights, 0), rtol=1e-5, atol=1e-6)
    assert f"IR version {model.ir_version} -> {most_ir}" in caplog.text
    assert onnx.load(path, load_external_data=False).ir_version == model.ir_version  # the file is left as it was


def test_a_model_whose_operator_has_no_older_form_is_left_as_it_is(monkeypatch: pytest.MonkeyPatch,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(onnx_versions, "runtime_limits", lambda: (13, 19))  # Gelu is opset 20's
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    model = helper.make_model(helper.make_graph([helper.make_node("Gelu", ["x"], ["y"])], "gelu", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 20)], ir_version=13)
    with caplog.at_level(logging.WARNING, logger="ortserve.runtime.onnx_versions"):
        assert not onnx_versions.fit_to_runtime(model, "gelu.onnx")
    assert model.opset_import[0].version == 20
    assert "gelu.onnx: opset 20 is newer than this onnxruntime reads (19)" in caplog.text
    assert "Gelu" in caplog.text


def _opset6_gemm_add(weights: np.ndarray, bias: np.ndarray, *, initializers_as_inputs: bool) -> onnx.ModelProto:
    """Opset 6's Gemm and Add with its `broadcast` attribute, as PyTorch 0.3 exported them (IR 3 lists the
    initializers among the graph's inputs)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    nodes = [helper.make_node("Gemm", ["x", "w", "zero"], ["h"], broadcast=1),
             helper.make_node("Add", ["h", "b"], ["y"], broadcast=1)]
    initializers = [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(np.zeros(3, np.float32), "zero"),
                    numpy_helper.from_array(bias, "b")]
    inputs = [x]
    if initializers_as_inputs:
        inputs += [helper.make_tensor_value_info(each.name, each.data_type, list(each.dims)) for each in initializers]
    graph = helper.make_graph(nodes, "old", inputs, [y], initializers)
    return helper.make_model(graph, ir_version=3, opset_imports=[helper.make_opsetid("", 6)])


def test_a_model_older_than_the_kernels_onnx_runtime_keeps_is_served_converted_up(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    oldest = onnx_versions.oldest_runtime_opset()
    if oldest <= 6:
        pytest.skip("this onnxruntime still runs opset 6's kernels")
    weights = np.random.default_rng(3).standard_normal((5, 3)).astype(np.float32)
    bias = np.random.default_rng(4).standard_normal(3).astype(np.float32)
    path = tmp_path / "old.onnx"
    onnx.save(_opset6_gemm_add(weights, bias, initializers_as_inputs=True), path)
    rows = np.random.default_rng(5).standard_normal((2, 5)).astype(np.float32)
    with caplog.at_level(logging.WARNING, logger="ortserve.runtime.onnx_versions"), \
            ortserve.Engine.from_file(path, name="old") as engine:
        answer = engine.predict("old", {"x": rows})["y"]
    np.testing.assert_allclose(answer, rows @ weights + bias, rtol=1e-5, atol=1e-6)
    assert f"opset 6 is older than this onnxruntime runs; read as opset {oldest}" in caplog.text
    assert onnx_versions.runnable_file(path) != path  # the tools take a converted copy too


def test_an_old_model_the_converter_refuses_fails_with_onnx_runtimes_reason(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    if onnx_versions.oldest_runtime_opset() <= 6:
        pytest.skip("this onnxruntime still runs opset 6's kernels")
    weights, bias = np.ones((5, 3), np.float32), np.ones(3, np.float32)
    path = tmp_path / "old.onnx"
    onnx.save(_opset6_gemm_add(weights, bias, initializers_as_inputs=False), path)  # IR 3 the converter refuses
    with caplog.at_level(logging.WARNING, logger="ortserve.runtime.onnx_versions"), \
            pytest.raises(ortserve.InvalidInput, match=r"Could not find an implementation for Gemm\(6\)"):
        ortserve.Engine.from_file(path, name="old")
    oldest = onnx_versions.oldest_runtime_opset()
    assert f"opset 6 is older than this onnxruntime runs ({oldest}), and onnx's version converter cannot convert" \
        in caplog.text


def test_an_old_prelu_keeps_its_slope_per_channel(tmp_path: Path) -> None:
    """Before opset 7 a PRelu slope of C values applied along axis 1; from 7 it broadcasts from the last axis."""
    if onnx_versions.oldest_runtime_opset() <= 6:
        pytest.skip("this onnxruntime still runs opset 6's kernels")
    slope = np.array([0.1, 0.5, 2.0], np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])
    listed_slope = helper.make_tensor_value_info("slope", TensorProto.FLOAT, [3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 4])
    graph = helper.make_graph([helper.make_node("PRelu", ["x", "slope"], ["y"])], "prelu", [x, listed_slope], [y],
                              [numpy_helper.from_array(slope, "slope")])
    path = tmp_path / "prelu.onnx"
    onnx.save(helper.make_model(graph, ir_version=3, opset_imports=[helper.make_opsetid("", 6)]), path)
    rows = np.random.default_rng(6).standard_normal((2, 3, 4)).astype(np.float32)
    with ortserve.Engine.from_file(path, name="prelu") as engine:
        answer = engine.predict("prelu", {"x": rows})["y"]
    per_channel = slope.reshape(3, 1)
    np.testing.assert_allclose(answer, np.where(rows < 0, rows * per_channel, rows), rtol=1e-6)


def test_the_probes_of_onnx_runtimes_versions_print_no_warnings() -> None:
    """The probes load tiny models of opsets 1 and 6, which ONNX Runtime warns about on stderr: every server
    printed those warnings once, about a model nobody serves."""
    import subprocess
    import sys

    probe = ("from ortserve.runtime import onnx_versions as v; "
             "print(v.oldest_runtime_opset(), *v.runtime_limits())")
    completed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    oldest, most_ir, most_opset = map(int, completed.stdout.split())
    assert oldest == 7 and most_ir >= 10 and most_opset >= 21
    assert "opset" not in completed.stderr, completed.stderr
