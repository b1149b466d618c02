"""A run that ONNX Runtime refuses is answered with what went wrong: a request the model's kernels refuse is the
request's error (400 / INVALID_ARGUMENT), a run that cannot get its memory is 507 / RESOURCE_EXHAUSTED, a failing
execution provider is the server's (500 / INTERNAL), and a fault in ortserve itself is never passed off as the
request's. The server goes on serving."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors
from tritonclient.utils import InferenceServerException

import ortserve
from ortserve.bench.server import RunningServer, start_server
from ortserve.examples.models import _model, mlp, save

TABLE = np.arange(15, dtype=np.float32).reshape(5, 3)
TERABYTES = 1 << 45  # floats: far past any machine's memory, so the allocation fails at once


def _lookup() -> helper.ModelProto:
    """Rows of a 5-row table by index: an index past the table is refused by Gather itself."""
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "index"], ["rows"])], "lookup",
        [helper.make_tensor_value_info("index", TensorProto.INT64, ["batch"])],
        [helper.make_tensor_value_info("rows", TensorProto.FLOAT, ["batch", 3])],
        initializer=[numpy_helper.from_array(TABLE, "table")])
    return _model(graph)


def _expand() -> helper.ModelProto:
    """A [1, 1] tensor broadcast to the shape its second input asks for."""
    graph = helper.make_graph(
        [helper.make_node("Expand", ["x", "shape"], ["y"])], "expand",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1]),
         helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", "columns"])])
    return _model(graph)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repository = tmp_path_factory.mktemp("run_errors")
    save(_lookup(), repository, "lookup")
    save(_expand(), repository, "expand")
    with start_server(repository, repository / ".server.log") as running:
        yield running


def _v2(server: RunningServer, model: str, **inputs: np.ndarray) -> requests.Response:
    tensors = [{"name": name, "shape": list(array.shape), "datatype": "INT64" if array.dtype == np.int64 else "FP32",
                "data": array.ravel().tolist()} for name, array in inputs.items()]
    return requests.post(f"{server.url}/v2/models/{model}/infer", json={"inputs": tensors}, timeout=30)


def _grpc_infer(server: RunningServer, model: str, **inputs: np.ndarray) -> grpcclient.InferResult:
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    tensors = []
    for name, array in inputs.items():
        tensor = grpcclient.InferInput(name, list(array.shape), "INT64" if array.dtype == np.int64 else "FP32")
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return client.infer(model, tensors)


def test_values_a_kernel_refuses_are_the_requests_error(server: RunningServer) -> None:
    answer = _v2(server, "lookup", index=np.array([1, 7], np.int64))
    assert answer.status_code == 400, answer.text
    assert "model 'lookup' version 1 failed to run" in answer.json()["error"]
    assert "indices element out of data bounds" in answer.json()["error"]
    with pytest.raises(InferenceServerException, match="out of data bounds") as refused:
        _grpc_infer(server, "lookup", index=np.array([9], np.int64))
    assert refused.value.status() == "StatusCode.INVALID_ARGUMENT"
    served = _grpc_infer(server, "lookup", index=np.array([4, 0], np.int64)).as_numpy("rows")
    np.testing.assert_array_equal(served, TABLE[[4, 0]])


def test_a_run_that_cannot_get_its_memory_is_resource_exhausted(server: RunningServer) -> None:
    one = np.ones((1, 1), np.float32)
    answer = _v2(server, "expand", x=one, shape=np.array([1, TERABYTES], np.int64))
    assert answer.status_code == 507, answer.text
    assert answer.json()["error"].startswith("model 'expand' version 1 ran out of memory running the request")
    with pytest.raises(InferenceServerException, match="ran out of memory") as refused:
        _grpc_infer(server, "expand", x=one, shape=np.array([TERABYTES, 2], np.int64))
    assert refused.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    tf_serving = requests.post(f"{server.url}/v1/models/expand:predict", timeout=30,
                               json={"inputs": {"x": [[1.0]], "shape": [TERABYTES, 1]}})
    assert tf_serving.status_code == 507 and "ran out of memory" in tf_serving.json()["error"]
    answer = _v2(server, "expand", x=2 * one, shape=np.array([2, 3], np.int64))
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["data"] == [2.0] * 6


class _FailingSession:
    """Stands in for an ONNX Runtime session whose run raises `error`."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def run(self, names: object, feeds: object) -> list[np.ndarray]:
        raise self.error


@pytest.mark.parametrize(("error", "kind", "message"), [
    (ort_errors.EPFail("CUDA failure 700: an illegal memory access"), ortserve.RunFailed,
     r"failed on its execution provider \(EPFail\): CUDA failure 700"),
    (ort_errors.Fail("BFCArena: Failed to allocate memory for requested buffer"), ortserve.ResourceExhausted,
     "ran out of memory"),
    (ort_errors.RuntimeException("Non-zero status code returned while running Reshape node"), ortserve.InvalidInput,
     "failed to run: Non-zero status code"),
    (TypeError("a fault in ortserve"), TypeError, "a fault in ortserve"),
])
def test_each_kind_of_run_failure_keeps_its_meaning(tmp_path: Path, error: Exception, kind: type[Exception],
                                                    message: str) -> None:
    with ortserve.Engine.from_file(save(mlp(), tmp_path, "mlp"), name="mlp") as engine:
        execute = engine.model("mlp").resolve().executor(_FailingSession(error))  # type: ignore[arg-type]
        with pytest.raises(kind, match=message):
            execute({"input": np.zeros((1, 784), np.float32)})
