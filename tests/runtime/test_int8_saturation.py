"""INT8 models that saturate ONNX Runtime's u8 x s8 kernels on CPUs without VNNI are found at load and reported,
with what to do; models that cannot saturate are not. Files made by ONNX Runtime's own quantizer."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static

from ortserve import Engine
from ortserve.examples.models import mlp
from ortserve.runtime import session
from ortserve.runtime.int8_saturation import saturating_weights


class _Rows(CalibrationDataReader):
    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self._batches = iter([{"input": rng.standard_normal((8, 784)).astype(np.float32)} for _ in range(4)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def _static(tmp_path: Path, name: str, **options: object) -> Path:
    source, target = tmp_path / "fp32.onnx", tmp_path / f"{name}.onnx"
    onnx.save(mlp(), source)
    chosen = {"activation_type": QuantType.QUInt8, "weight_type": QuantType.QInt8, **options}  # ortserve's pair
    quantize_static(str(source), str(target), _Rows(), quant_format=QuantFormat.QDQ, per_channel=True,
                    **chosen)  # type: ignore[arg-type]
    return target


def _matmul_model() -> onnx.ModelProto:
    weights = np.random.default_rng(1).standard_normal((64, 32)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["input", "w"], ["output"])], "matmul",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 64])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 32])],
                              initializer=[numpy_helper.from_array(weights, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(("options", "expected"), [
    ({"reduce_range": False}, 2),  # u8 activations, s8 weights of 8 bits: both layers
    ({"reduce_range": True}, 0),  # 7-bit weights fit the 16-bit pair sums
    ({"reduce_range": False, "activation_type": QuantType.QInt8}, 0),  # s8 activations
    ({"reduce_range": False, "weight_type": QuantType.QUInt8}, 0),  # u8 weights
])
def test_static_qdq_weights_are_found_only_where_they_can_saturate(tmp_path: Path, options: dict,
                                                                   expected: int) -> None:
    path = _static(tmp_path, "int8", **options)
    assert len(saturating_weights(onnx.load(str(path)).graph)) == expected


@pytest.mark.parametrize(("reduce_range", "expected"), [(False, 1), (True, 0)])
def test_dynamic_matmul_weights_are_found(tmp_path: Path, reduce_range: bool, expected: int) -> None:
    source, target = tmp_path / "fp32.onnx", tmp_path / "dynamic.onnx"
    onnx.save(_matmul_model(), source)
    quantize_dynamic(str(source), str(target), per_channel=True, reduce_range=reduce_range,
                     weight_type=QuantType.QInt8)
    assert len(saturating_weights(onnx.load(str(target)).graph)) == expected


def test_an_fp32_model_has_none() -> None:
    assert saturating_weights(mlp().graph) == []


@pytest.mark.parametrize("vnni", [False, True])
def test_loading_on_a_cpu_without_vnni_warns_once_naming_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 caplog: pytest.LogCaptureFixture,
                                                                 vnni: bool) -> None:
    path = _static(tmp_path, "full_range", reduce_range=False)
    monkeypatch.setattr(session, "has_vnni", lambda: vnni)
    session._warn_once.cache_clear()
    with caplog.at_level(logging.WARNING, logger="ortserve.runtime.session"):
        for _ in range(2):  # a second engine on the same file: no second line
            with Engine.from_file(path, name="classifier") as engine:
                assert engine.predict("classifier", np.zeros((1, 784), np.float32))
    warnings = [record.getMessage() for record in caplog.records if "VNNI" in record.getMessage()]
    if vnni:
        assert warnings == []
    else:
        assert len(warnings) == 1
        assert f"'classifier' ({path})" in warnings[0] and "2 INT8 weight tensor(s)" in warnings[0]
        assert "--reduce-range" in warnings[0]
