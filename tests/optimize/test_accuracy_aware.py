"""The accuracy-aware search on a model built so that exactly one spot must stay in FP32."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from tests.optimize.conftest import listing
from tests.optimize.models import FEATURES, outlier_channel

from ortserve.cli import main


@pytest.fixture
def outlier(tmp_path: Path) -> Path:
    onnx.save(outlier_channel(), str(tmp_path / "outlier.onnx"))
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calibration.npz", x=rng.standard_normal((64, FEATURES)).astype(np.float32))
    np.savez(tmp_path / "evaluation.npz", x=rng.standard_normal((200, FEATURES)).astype(np.float32))
    return tmp_path


def _quantize(directory: Path, *extra: str) -> int:
    return main(["quantize", str(directory / "outlier.onnx"), "--output", str(directory / "int8.onnx"),
                 "--calibration-data", str(directory / "calibration.npz"), "--data",
                 str(directory / "evaluation.npz"), "--task", "classification", *extra])


def _agreement(directory: Path, variant: Path) -> float:
    x = np.load(directory / "evaluation.npz")["x"]
    fp32 = ort.InferenceSession(str(directory / "outlier.onnx")).run(None, {"x": x})[0]
    int8 = ort.InferenceSession(str(variant)).run(None, {"x": x})[0]
    return float(np.mean(fp32.argmax(1) == int8.argmax(1)))


def test_naive_int8_loses_the_small_channels(outlier: Path) -> None:
    assert _quantize(outlier) == 0
    assert _agreement(outlier, outlier / "int8.onnx") < 0.6


def test_search_keeps_only_the_outlier_spot_in_fp32(outlier: Path, capsys: pytest.CaptureFixture) -> None:
    assert _quantize(outlier, "--accuracy-budget", "0.05") == 0, capsys.readouterr().err
    record = json.loads((outlier / "int8.provenance.json").read_text())["step"]
    search = record["accuracy_aware"]
    assert search["met"] is True
    assert search["ranking"][0]["where"] == "activation h"
    assert sorted(search["excluded"]) == ["expand", "rescale"]
    assert [len(step["excluded"]) for step in search["steps"]] == [0, 2]
    graph = onnx.load(str(outlier / "int8.onnx")).graph
    producers = {output: node for node in graph.node for output in node.output}
    # h is no longer rounded, and the last MatMul still computes on quantized inputs
    assert not any(node.op_type == "QuantizeLinear" and node.input[0] == "h" for node in graph.node)
    classify = next(node for node in graph.node if node.name == "classify")
    assert {producers[name].op_type for name in classify.input} == {"DequantizeLinear"}
    agreement = _agreement(outlier, outlier / "int8.onnx")
    assert record["evaluation"]["top1_agreement"] == pytest.approx(agreement)
    assert agreement >= 0.95
    assert "budget met" in capsys.readouterr().out


def test_unreachable_budget_is_reported_and_nothing_is_written(outlier: Path, capsys: pytest.CaptureFixture) -> None:
    before = listing(outlier)
    assert _quantize(outlier, "--accuracy-budget", "0") == 3
    error = capsys.readouterr().err
    assert "is over the budget 0; nothing was written" in error and "budget NOT met" in error
    assert listing(outlier) == before
