"""Models at the edges of what a repository holds: no inputs at all, a model written by the newest onnx, and
tensors that no protocol here carries (refused at load, naming the tensor)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from onnx import TensorProto, helper, numpy_helper

from ortserve.bench.server import RunningServer, start_server
from ortserve.examples.models import IR_VERSION, OPSET

CONSTANT = np.array([1.5, -2.0, 4.0], np.float32)


def _save(repository: Path, name: str, graph: onnx.GraphProto, *, stamped: bool = True) -> None:
    model = (helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
             if stamped else helper.make_model(graph))  # unstamped: the installed onnx's newest versions
    (repository / name / "1").mkdir(parents=True)
    onnx.save(model, repository / name / "1" / "model.onnx")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("unusual")
    value = numpy_helper.from_array(CONSTANT)
    _save(repo, "no_inputs", helper.make_graph([helper.make_node("Constant", [], ["y"], value=value)], "constant", [],
                                               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])]))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])
    _save(repo, "sequence_out", helper.make_graph(
        [helper.make_node("SequenceConstruct", ["x", "x"], ["pair"])], "sequence", [x],
        [helper.make_tensor_sequence_value_info("pair", TensorProto.FLOAT, ["batch", 3])]))
    _save(repo, "newest_onnx", helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "relu", [x],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])]), stamped=False)
    with start_server(repo, repo / ".server.log") as running:
        yield running


def test_a_model_with_no_inputs_answers_a_request_with_none(server: RunningServer) -> None:
    answer = requests.post(f"{server.url}/v2/models/no_inputs/infer", json={"inputs": []}, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["data"] == CONSTANT.tolist()
    for client in (httpclient.InferenceServerClient(server.host_port),
                   grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")):
        np.testing.assert_array_equal(client.infer("no_inputs", []).as_numpy("y"), CONSTANT)
    tf_serving = requests.post(f"{server.url}/v1/models/no_inputs:predict", json={"inputs": {}}, timeout=10)
    assert tf_serving.json() == {"outputs": CONSTANT.tolist()}


def test_a_request_without_a_models_input_names_it(server: RunningServer) -> None:
    answer = requests.post(f"{server.url}/v2/models/newest_onnx/infer", json={"inputs": []}, timeout=10)
    assert answer.status_code == 400
    assert answer.json() == {"error": "missing input 'x'"}
    missing = requests.post(f"{server.url}/v2/models/newest_onnx/infer", json={}, timeout=10)
    assert missing.status_code == 400 and "'inputs' must be a list" in missing.json()["error"]


def test_a_model_from_the_newest_onnx_serves(server: RunningServer) -> None:
    rows = np.array([[-1.0, 0.5, 2.0]], np.float32)
    request = httpclient.InferInput("x", [1, 3], "FP32")
    request.set_data_from_numpy(rows)
    answer = httpclient.InferenceServerClient(server.host_port).infer("newest_onnx", [request])
    np.testing.assert_array_equal(answer.as_numpy("y"), np.maximum(rows, 0))


def test_a_tensor_no_protocol_carries_is_refused_at_load_by_name(server: RunningServer) -> None:
    answer = requests.get(f"{server.url}/v2/models/sequence_out", timeout=10)
    assert answer.status_code == 503
    assert "output 'pair' is a seq(tensor(float)), which ortserve does not serve" in answer.json()["error"]
    assert requests.get(f"{server.url}/v2/models/no_inputs/ready", timeout=10).status_code == 200
