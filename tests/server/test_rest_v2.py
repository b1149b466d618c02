"""KServe V2 REST through Triton's official HTTP client, in JSON and binary form, against in-process ORT."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from ortserve.bench.server import RunningServer


@pytest.fixture(scope="module")
def client(server: RunningServer) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(server.host_port)


def _input(name: str, array: np.ndarray, datatype: str, binary: bool) -> triton.InferInput:
    tensor = triton.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def test_health_and_server_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    metadata = client.get_server_metadata()
    assert metadata["name"] == "ortserve"
    assert "binary_tensor_data" in metadata["extensions"]


def test_model_metadata_describes_the_signature(client: triton.InferenceServerClient) -> None:
    metadata = client.get_model_metadata("mlp")
    assert metadata["name"] == "mlp"
    assert metadata["versions"] == ["1"]
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 784]}]
    assert metadata["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]
    assert client.is_model_ready("mlp")
    assert client.is_model_ready("versioned", "2")


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_mlp_matches_in_process_onnxruntime(client: triton.InferenceServerClient, reference, binary: bool) -> None:
    batch = np.random.default_rng(1).standard_normal((3, 784)).astype(np.float32)
    result = client.infer("mlp", [_input("input", batch, "FP32", binary)],
                          outputs=[triton.InferRequestedOutput("logits", binary_data=binary)])
    (expected,) = reference("mlp").run(None, {"input": batch})
    np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=1e-6, atol=1e-6)
    assert result.get_response()["model_version"] == "1"


def test_binary_output_by_default_when_no_outputs_requested(client: triton.InferenceServerClient) -> None:
    batch = np.ones((2, 784), np.float32)
    result = client.infer("mlp", [_input("input", batch, "FP32", True)])
    assert result.get_output("logits")["parameters"]["binary_data_size"] == 2 * 10 * 4
    assert result.as_numpy("logits").shape == (2, 10)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_every_datatype_of_a_multi_io_model(client: triton.InferenceServerClient, binary: bool) -> None:
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    b = np.array([[1, 2, 3, 4], [-5, 6, -7, 2**40]], dtype=np.int64)
    half = np.array([[0.5, 1.5, -2.25], [3, 4, 5]], dtype=np.float16)
    text = np.array(["héllo".encode(), b"world"], dtype=np.object_)
    inputs = [_input("a", a, "FP32", binary), _input("b", b, "INT64", binary),
              _input("half", half, "FP16", binary), _input("text", text, "BYTES", binary)]
    outputs = [triton.InferRequestedOutput(name, binary_data=binary) for name in ("total", "scaled", "label_bytes")]
    result = client.infer("multi", inputs, outputs=outputs)
    np.testing.assert_array_equal(result.as_numpy("total"), a + b.astype(np.float32))
    assert result.as_numpy("scaled").dtype == np.float16
    np.testing.assert_array_equal(result.as_numpy("scaled"), half * np.float16(2))
    # JSON carries BYTES as text, binary as raw bytes; both must be the strings sent
    texts = [item.decode() if isinstance(item, bytes) else item for item in result.as_numpy("label_bytes")]
    assert texts == ["héllo", "world"]


def test_only_requested_outputs_come_back(client: triton.InferenceServerClient) -> None:
    inputs = [_input("a", np.zeros((1, 4), np.float32), "FP32", False),
              _input("b", np.zeros((1, 4), np.int64), "INT64", False),
              _input("half", np.zeros((1, 3), np.float16), "FP16", False),
              _input("text", np.array([b"x"], dtype=np.object_), "BYTES", False)]
    result = client.infer("multi", inputs, outputs=[triton.InferRequestedOutput("scaled", binary_data=False)])
    assert [output["name"] for output in result.get_response()["outputs"]] == ["scaled"]


def test_nested_json_data_is_accepted(server: RunningServer, reference) -> None:
    rows = np.random.default_rng(2).standard_normal((2, 784)).astype(np.float32)
    body = {"id": "req-7", "inputs": [{"name": "input", "shape": [2, 784], "datatype": "FP32", "data": rows.tolist()}]}
    response = httpx.post(f"{server.url}/v2/models/mlp/infer", json=body)
    assert response.status_code == 200
    document = response.json()
    assert document["id"] == "req-7"
    (output,) = document["outputs"]
    assert output["shape"] == [2, 10] and output["datatype"] == "FP32"
    assert "parameters" not in output  # perf_analyzer rejects unexpected parameters in JSON mode
    (expected,) = reference("mlp").run(None, {"input": rows})
    np.testing.assert_allclose(np.array(output["data"]).reshape(2, 10), expected, rtol=1e-6, atol=1e-6)


def test_versions_are_addressable(client: triton.InferenceServerClient, reference) -> None:
    batch = np.full((1, 784), 0.5, np.float32)
    for version in ("1", "2", "3"):
        result = client.infer("versioned", [_input("input", batch, "FP32", True)], model_version=version)
        (expected,) = reference("versioned", int(version)).run(None, {"input": batch})
        np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=1e-6, atol=1e-6)
        assert result.get_response()["model_version"] == version
    latest = client.infer("versioned", [_input("input", batch, "FP32", True)])
    assert latest.get_response()["model_version"] == "3"


def expected_classes(scores: np.ndarray, count: int) -> list[list[bytes]]:
    """Triton's classification answer, worked out here: each row's best `count` as b"<value>:<index>"."""
    best = np.argsort(-scores, axis=1, kind="stable")[:, :count]
    return [[f"{row[i]:f}:{i}".encode() for i in indices] for row, indices in zip(scores, best, strict=True)]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_classification_extension(client: triton.InferenceServerClient, reference, binary: bool) -> None:
    """tritonclient's class_count: the output comes back as its best classes, BYTES [batch, count]."""
    assert "classification" in client.get_server_metadata()["extensions"]
    rows = np.random.default_rng(6).standard_normal((4, 784)).astype(np.float32)
    wanted = triton.InferRequestedOutput("logits", binary_data=binary, class_count=3)
    result = client.infer("mlp", [_input("input", rows, "FP32", binary)], outputs=[wanted])
    (logits,) = reference("mlp").run(None, {"input": rows})
    assert result.get_output("logits")["datatype"] == "BYTES"
    answer = [[v if isinstance(v, bytes) else v.encode() for v in row] for row in result.as_numpy("logits").tolist()]
    assert answer == expected_classes(logits, 3)  # the client gives JSON strings as str, binary ones as bytes


@pytest.mark.parametrize(("model", "output", "count", "words"), [
    ("mlp", "logits", 0, "whole number of at least 1"),
    ("mlp", "logits", "3", "whole number of at least 1, got '3'"),
    ("multi", "label_bytes", 2, "BYTES data, which has no order"),
])
def test_classification_parameter_errors(server: RunningServer, model: str, output: str, count, words: str) -> None:
    inputs = [{"name": "input", "shape": [1, 784], "datatype": "FP32", "data": [0.0] * 784}]
    body = {"inputs": inputs, "outputs": [{"name": output, "parameters": {"classification": count}}]}
    response = httpx.post(f"{server.url}/v2/models/{model}/infer", json=body)
    assert response.status_code == 400 and words in response.json()["error"]


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_compressed_requests(client: triton.InferenceServerClient, reference, algorithm: str, binary: bool) -> None:
    """Triton's client compresses the request body (Content-Encoding) and asks for a compressed answer, which
    it may get as is."""
    rows = np.random.default_rng(4).standard_normal((3, 784)).astype(np.float32)
    result = client.infer("mlp", [_input("input", rows, "FP32", binary)], request_compression_algorithm=algorithm,
                          response_compression_algorithm=algorithm)
    (expected,) = reference("mlp").run(None, {"input": rows})
    np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=1e-5, atol=1e-6)


def test_unbatched_model_takes_its_fixed_shape(client: triton.InferenceServerClient) -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    result = client.infer("fixed", [_input("x", x, "FP32", True)])
    np.testing.assert_array_equal(result.as_numpy("y"), x * 3)
    assert client.get_model_config("fixed")["max_batch_size"] == 0


def test_triton_model_config(client: triton.InferenceServerClient) -> None:
    config = client.get_model_config("slow_batch")
    assert config["max_batch_size"] == 64
    assert config["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": [784]}]
    assert config["output"] == [{"name": "logits", "data_type": "TYPE_FP32", "dims": [10]}]
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 200_000


def test_statistics_count_requests(client: triton.InferenceServerClient) -> None:
    before = client.get_inference_statistics("fixed")["model_stats"][0]["inference_stats"]["success"]["count"]
    x = np.zeros((2, 3), np.float32)
    for _ in range(3):
        client.infer("fixed", [_input("x", x, "FP32", True)])
    stats = client.get_inference_statistics("fixed")["model_stats"][0]
    assert stats["inference_stats"]["success"]["count"] == before + 3
    assert stats["inference_stats"]["compute_infer"]["count"] == stats["execution_count"]


def test_provider_fallback_is_reported(client: triton.InferenceServerClient) -> None:
    metadata = client.get_model_metadata("gpu_first")
    assert metadata["execution_providers"] == ["CPUExecutionProvider"]
    result = client.infer("gpu_first", [_input("input", np.zeros((1, 784), np.float32), "FP32", True)])
    assert result.as_numpy("logits").shape == (1, 10)


def test_repository_index_reports_failures(client: triton.InferenceServerClient) -> None:
    index = {(entry["name"], entry.get("version")): entry for entry in client.get_model_repository_index()}
    assert index[("mlp", "1")]["state"] == "READY"
    assert index[("bad_config", None)]["state"] == "UNAVAILABLE"
    assert "intra_op_threads" in index[("bad_config", None)]["reason"]


def test_unknown_model_is_an_error(client: triton.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException, match="nope"):
        client.infer("nope", [_input("input", np.zeros((1, 784), np.float32), "FP32", True)])


def test_fast_rest_requests_leave_no_unawaited_disconnect_watch(server: RunningServer) -> None:
    """A request run at once on the event loop never starts the watch for its client's disconnection."""
    body = {"inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32", "data": [0.0] * 784}]}
    for _ in range(20):
        assert httpx.post(f"{server.url}/v2/models/mlp/infer", json=body).status_code == 200
    assert "never awaited" not in server.log()
