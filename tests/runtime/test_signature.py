"""What the signature reads from a model: dimension names, and the failure they explain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

import ortserve
from ortserve.examples.models import _model, save


def _sum_of_two(tmp_path: Path) -> Path:
    """a + b, both [batch, length]: the model says they share their length, which ONNX Runtime does not check."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["c"])], "sum_of_two",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", "length"]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", "length"])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, ["batch", "length"])])
    return save(_model(graph), tmp_path, "sum_of_two")


def test_a_failed_run_names_the_dimension_the_inputs_disagree_on(tmp_path: Path) -> None:
    with ortserve.Engine.from_file(_sum_of_two(tmp_path), name="sum_of_two") as engine:
        served = engine.model("sum_of_two").resolve()
        assert served.signature is not None and served.signature.named_dimensions == {
            "batch": (("a", 0), ("b", 0)), "length": (("a", 1), ("b", 1))}
        a, b = np.ones((2, 3), np.float32), np.ones((2, 4), np.float32)
        with pytest.raises(ortserve.InvalidInput, match=r"failed to run \(the model names dimension 'length' alike "
                                                        r"on several inputs, and they differ here \('a' 3, 'b' 4\)\)"):
            engine.predict("sum_of_two", {"a": a, "b": b})
        np.testing.assert_array_equal(engine.predict("sum_of_two", {"a": a, "b": 2 * a})["c"], 3 * a)


def test_dimension_names_are_not_enforced_before_a_run(tmp_path: Path) -> None:
    """Broadcasting [2, 3] with [2, 1] runs: the names are not enforced before the run, as ONNX Runtime does not."""
    with ortserve.Engine.from_file(_sum_of_two(tmp_path), name="sum_of_two") as engine:
        a = np.ones((2, 3), np.float32)
        c = engine.predict("sum_of_two", {"a": a, "b": np.ones((2, 1), np.float32)})["c"]
        np.testing.assert_array_equal(c, 2 * a)
