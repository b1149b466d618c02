"""KServe V2 gRPC through Triton's official gRPC client: raw and typed contents, config, statistics, errors."""

from __future__ import annotations

import queue

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from ortserve.bench.server import RunningServer
from tests.server.test_rest_v2 import expected_classes


@pytest.fixture(scope="module")
def client(server: RunningServer) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")


@pytest.fixture(scope="module")
def stub(server: RunningServer) -> service_pb2_grpc.GRPCInferenceServiceStub:
    return service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}"))


def _input(name: str, array: np.ndarray, datatype: str) -> triton.InferInput:
    tensor = triton.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def test_classification_extension(client: triton.InferenceServerClient, reference) -> None:
    rows = np.random.default_rng(6).standard_normal((2, 784)).astype(np.float32)
    wanted = triton.InferRequestedOutput("logits", class_count=4)
    result = client.infer("mlp", [_input("input", rows, "FP32")], outputs=[wanted])
    (logits,) = reference("mlp").run(None, {"input": rows})
    assert result.as_numpy("logits").tolist() == expected_classes(logits, 4)
    with pytest.raises(InferenceServerException, match="classification"):
        client.infer("mlp", [_input("input", rows, "FP32")],
                     outputs=[triton.InferRequestedOutput("logits", class_count=-1)])


def test_streamed_inference_with_tritonclient(client: triton.InferenceServerClient, reference) -> None:
    """start_stream / async_stream_infer: each request answered on the stream, matched by its id."""
    answers: queue.Queue = queue.Queue()
    rows = np.random.default_rng(7).standard_normal((6, 784)).astype(np.float32)
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        for index in range(6):
            client.async_stream_infer("mlp", [_input("input", rows[index:index + 1], "FP32")], request_id=str(index))
        client.async_stream_infer("mlp", [_input("input", rows[:1, :5], "FP32")], request_id="bad")
        results = [answers.get(timeout=30) for _ in range(7)]
    finally:
        client.stop_stream()
    errors = [str(error) for _, error in results if error is not None]
    assert len(errors) == 1 and "[1, 5]" in errors[0]
    (expected,) = reference("mlp").run(None, {"input": rows})
    for result, _ in results:
        if result is not None:
            index = int(result.get_response().id)
            np.testing.assert_allclose(result.as_numpy("logits"), expected[index:index + 1], rtol=1e-5, atol=1e-5)


def test_health_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("mlp") and client.is_model_ready("versioned", "2")
    assert not client.is_model_ready("versioned", "9")
    assert "binary_tensor_data" in client.get_server_metadata(as_json=True)["extensions"]
    metadata = client.get_model_metadata("mlp", as_json=True)
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": ["-1", "784"]}]
    assert metadata["platform"] == "onnxruntime_onnx"


def test_raw_contents_match_in_process_onnxruntime(client: triton.InferenceServerClient, reference) -> None:
    batch = np.random.default_rng(6).standard_normal((4, 784)).astype(np.float32)
    result = client.infer("mlp", [_input("input", batch, "FP32")])
    (expected,) = reference("mlp").run(None, {"input": batch})
    np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=1e-6, atol=1e-6)
    assert result.get_response().model_version == "1"


def test_every_datatype_of_a_multi_io_model(client: triton.InferenceServerClient) -> None:
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    b = np.array([[1, 2, 3, 4], [-5, 6, -7, 2**40]], dtype=np.int64)
    half = np.array([[0.5, 1.5, -2.25], [3, 4, 5]], dtype=np.float16)
    text = np.array(["héllo".encode(), b"world"], dtype=np.object_)
    inputs = [_input("a", a, "FP32"), _input("b", b, "INT64"), _input("half", half, "FP16"),
              _input("text", text, "BYTES")]
    result = client.infer("multi", inputs)
    np.testing.assert_array_equal(result.as_numpy("total"), a + b.astype(np.float32))
    np.testing.assert_array_equal(result.as_numpy("scaled"), half * np.float16(2))
    assert list(result.as_numpy("label_bytes")) == ["héllo".encode(), b"world"]


def test_typed_contents_are_accepted(stub: service_pb2_grpc.GRPCInferenceServiceStub, reference) -> None:
    batch = np.random.default_rng(7).standard_normal((2, 784)).astype(np.float32)
    request = service_pb2.ModelInferRequest(model_name="mlp", id="typed-1")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=[2, 784])
    tensor.contents.fp32_contents.extend(batch.reshape(-1).tolist())
    response = stub.ModelInfer(request)
    assert response.id == "typed-1"
    (output,) = response.outputs
    assert list(output.shape) == [2, 10]
    logits = np.frombuffer(response.raw_output_contents[0], dtype=np.float32).reshape(2, 10)
    (expected,) = reference("mlp").run(None, {"input": batch})
    np.testing.assert_allclose(logits, expected, rtol=1e-6, atol=1e-6)


def test_requested_outputs_only(client: triton.InferenceServerClient) -> None:
    inputs = [_input("a", np.zeros((1, 4), np.float32), "FP32"), _input("b", np.zeros((1, 4), np.int64), "INT64"),
              _input("half", np.zeros((1, 3), np.float16), "FP16"),
              _input("text", np.array([b"x"], dtype=np.object_), "BYTES")]
    result = client.infer("multi", inputs, outputs=[triton.InferRequestedOutput("total")])
    assert [output.name for output in result.get_response().outputs] == ["total"]


def test_model_config_and_statistics(client: triton.InferenceServerClient) -> None:
    config = client.get_model_config("slow_batch", as_json=True)["config"]
    assert config["max_batch_size"] == 64
    assert config["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": ["784"]}]
    before = client.get_inference_statistics("fixed", as_json=True)["model_stats"][0]
    client.infer("fixed", [_input("x", np.ones((2, 3), np.float32), "FP32")])
    after = client.get_inference_statistics("fixed", as_json=True)["model_stats"][0]
    count = lambda stats: int(stats["inference_stats"]["success"].get("count", 0))  # noqa: E731
    assert count(after) == count(before) + 1


def test_repository_index(client: triton.InferenceServerClient) -> None:
    models = client.get_model_repository_index(as_json=True)["models"]
    states = {(m["name"], m.get("version")): m["state"] for m in models}
    assert states[("mlp", "1")] == "READY"
    assert states[("bad_config", None)] == "UNAVAILABLE"


@pytest.mark.parametrize(("model", "inputs", "code", "words"), [
    ("nope", [("input", np.zeros((1, 784), np.float32), "FP32")], grpc.StatusCode.NOT_FOUND, ["'nope'"]),
    ("mlp", [("input", np.zeros((1, 784), np.float64), "FP64")], grpc.StatusCode.INVALID_ARGUMENT,
     ["FP64", "FP32"]),
    ("mlp", [("input", np.zeros((1, 783), np.float32), "FP32")], grpc.StatusCode.INVALID_ARGUMENT, ["[1, 783]"]),
    ("mlp", [("pixels", np.zeros((1, 784), np.float32), "FP32")], grpc.StatusCode.INVALID_ARGUMENT,
     ["unknown input 'pixels'"]),
    ("multi", [("a", np.zeros((1, 4), np.float32), "FP32")], grpc.StatusCode.INVALID_ARGUMENT, ["missing input"]),
    ("slow_batch", [("input", np.zeros((65, 784), np.float32), "FP32")], grpc.StatusCode.INVALID_ARGUMENT,
     ["max_batch_size 64"]),
    ("bad_config", [("input", np.zeros((1, 784), np.float32), "FP32")], grpc.StatusCode.UNAVAILABLE,
     ["intra_op_threads"]),
])
def test_bad_requests_get_the_right_status(stub: service_pb2_grpc.GRPCInferenceServiceStub, model: str,
                                           inputs: list, code: grpc.StatusCode, words: list[str]) -> None:
    request = service_pb2.ModelInferRequest(model_name=model)
    for name, array, datatype in inputs:
        request.inputs.add(name=name, datatype=datatype, shape=array.shape)
        request.raw_input_contents.append(array.tobytes())
    with pytest.raises(grpc.RpcError) as error:
        stub.ModelInfer(request)
    assert error.value.code() == code
    for word in words:
        assert word in error.value.details()


@pytest.mark.parametrize(("mutate", "words"), [
    (lambda r: r.raw_input_contents.append(b"extra"), ["raw_input_contents has 2 entries for 1 inputs"]),
    (lambda r: r.raw_input_contents.__setitem__(0, b"\0" * 100), ["100 bytes", "3136"]),
    (lambda r: r.inputs[0].ClearField("datatype"), ["datatype"]),
    (lambda r: r.inputs[0].shape.__setitem__(1, -784), ["negative"]),
])
def test_malformed_infer_requests(stub: service_pb2_grpc.GRPCInferenceServiceStub, mutate, words: list[str]) -> None:
    request = service_pb2.ModelInferRequest(model_name="mlp")
    request.inputs.add(name="input", datatype="FP32", shape=[1, 784])
    request.raw_input_contents.append(np.zeros((1, 784), np.float32).tobytes())
    mutate(request)
    with pytest.raises(grpc.RpcError) as error:
        stub.ModelInfer(request)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    for word in words:
        assert word in error.value.details()


def test_fp16_cannot_travel_as_typed_contents(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    request = service_pb2.ModelInferRequest(model_name="multi")
    request.inputs.add(name="half", datatype="FP16", shape=[1, 3]).contents.fp32_contents.extend([1, 2, 3])
    with pytest.raises(grpc.RpcError) as error:
        stub.ModelInfer(request)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "raw_input_contents" in error.value.details()


def test_unknown_model_through_the_client(client: triton.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException, match="nope"):
        client.get_model_metadata("nope")
