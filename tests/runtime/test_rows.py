"""The probe that decides whether batching may be inferred: outputs must have a row per input row when run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from ortserve.examples.models import _model, flattened, mlp, multi_io, save
from ortserve.runtime.rows import PROBE_ROWS, batching_problem
from ortserve.runtime.signature import read_signature


def _session(model, tmp_path: Path) -> ort.InferenceSession:
    path = save(model, tmp_path, "model")
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _problem(model, tmp_path: Path) -> str | None:
    session = _session(model, tmp_path)
    signature = read_signature(session)
    assert signature.batch_dimension_is_dynamic  # the shape rule alone would batch each of them
    return batching_problem(session, signature, {})


def test_a_flattened_output_is_not_batched(tmp_path: Path) -> None:
    problem = _problem(flattened(features=4), tmp_path)
    assert problem == (f"output 'y' has shape [{PROBE_ROWS * 4}] for a batch of {PROBE_ROWS} rows: its first "
                       "dimension is not the batch")


def test_a_value_dependent_row_count_is_not_batched(tmp_path: Path) -> None:
    """NonZero's indices, transposed to [count, 2], declared with a dynamic first dimension."""
    graph = helper.make_graph(
        [helper.make_node("NonZero", ["x"], ["indices"]), helper.make_node("Transpose", ["indices"], ["y"])],
        "found", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 5])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, ["found", 2])])
    problem = _problem(_model(graph), tmp_path)
    assert problem is not None and problem.startswith("output 'y' has shape [")


@pytest.mark.parametrize("model", [mlp(inputs=8, hidden=4, outputs=3), multi_io()], ids=["mlp", "multi_io"])
def test_models_with_a_row_per_input_row_are_batched(model, tmp_path: Path) -> None:
    assert _problem(model, tmp_path) is None


def test_differently_named_batch_dimensions_are_batched(tmp_path: Path) -> None:
    """tf2onnx names each tensor's unknown dimensions apart (unk__1, unk__2): the run, not the names, decides."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "renamed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["unk__1", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["unk__2", 4])])
    assert _problem(_model(graph), tmp_path) is None


def test_a_model_that_refuses_the_probe_keeps_the_shape_rule(tmp_path: Path) -> None:
    """Gather with ids the probe cannot know are valid (here, only 0 is): no evidence, batching stays."""
    table = helper.make_tensor("table", TensorProto.FLOAT, [1, 3], np.ones(3, np.float32).tolist())
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["y"])], "lookup",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2, 3])], initializer=[table])
    session = _session(_model(graph), tmp_path)
    with pytest.raises(Exception):  # noqa: B017 - ONNX Runtime's own error type for an index out of range
        session.run(None, {"ids": np.ones((1, 2), np.int64)})
    assert batching_problem(session, read_signature(session), {}) is None
