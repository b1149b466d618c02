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
