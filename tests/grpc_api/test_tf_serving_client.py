"""TF Serving's own client library (tensorflow-serving-api with tf.make_tensor_proto) against ortserve, and the
wire compatibility of the project's protos with the published ones, field by field."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ortserve.bench.server import RunningServer

HERE = Path(__file__).parent


def _run(*args: str) -> str:
    completed = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-4000:]
    return completed.stdout


def _describe(*modules: str) -> dict:
    return json.loads(_run(str(HERE / "describe_protos.py"), *modules))


@pytest.mark.slow
def test_tensorflow_serving_client_works_unchanged(server: RunningServer, reference, tmp_path: Path) -> None:
    batch = np.random.default_rng(9).standard_normal((2, 784)).astype(np.float32)
    np.save(tmp_path / "input.npy", batch)
    summary = json.loads(_run(str(HERE / "tf_serving_client.py"), str(server.grpc_port),
                              str(tmp_path / "input.npy"), str(tmp_path / "output.npy")).splitlines()[-1])
    (expected,) = reference("mlp").run(None, {"input": batch})
    np.testing.assert_allclose(np.load(tmp_path / "output.npy"), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(summary["listed_first_row"], expected[0], rtol=1e-6, atol=1e-6)
    assert summary["answered_version"] == 1
    assert summary["input_shape"] == [-1, 784]
    assert summary["input_dtype"] == "float32"
    assert summary["states"] == ["AVAILABLE"]


def _assert_subset(ours: dict, theirs: dict) -> None:
    """Every message and field the project declares exists upstream with the same number and type."""
    assert len(ours["messages"]) >= 10 and ours["methods"]
    for message, fields in ours["messages"].items():
        assert message in theirs["messages"], f"{message} is not a published message"
        for field, description in fields.items():
            assert theirs["messages"][message].get(field) == description, (message, field, description)
    for method, types in ours["methods"].items():
        assert theirs["methods"].get(method) == types, method


@pytest.mark.slow
def test_tf_serving_protos_match_the_published_ones() -> None:
    apis = ("predict_pb2", "get_model_metadata_pb2", "get_model_status_pb2", "prediction_service_pb2",
            "model_service_pb2", "classification_pb2", "regression_pb2", "inference_pb2", "input_pb2",
            "model_management_pb2", "prediction_log_pb2")
    configs = ("model_server_config_pb2", "file_system_storage_path_source_pb2", "logging_config_pb2")
    core = ("framework.tensor_pb2", "example.example_pb2", "example.feature_pb2")
    ours = _describe(*(f"ortserve.protos.tensorflow_serving.apis.{m}" for m in apis),
                     *(f"ortserve.protos.tensorflow_serving.config.{m}" for m in configs),
                     *(f"ortserve.protos.tensorflow.core.{m}" for m in core))
    theirs = _describe(*(f"tensorflow_serving.apis.{m}" for m in apis),
                       *(f"tensorflow_serving.config.{m}" for m in (*configs, "log_collector_config_pb2")),
                       *(f"tensorflow.core.{m}" for m in core))
    assert "tensorflow.serving.ModelConfig" in ours["messages"]
    _assert_subset(ours, theirs)


def test_v2_protos_match_tritons() -> None:
    ours = _describe("ortserve.protos.inference.grpc_service_pb2", "ortserve.protos.inference.model_config_pb2")
    theirs = _describe("tritonclient.grpc.service_pb2", "tritonclient.grpc.model_config_pb2")
    _assert_subset(ours, theirs)


def test_health_protos_match_grpcs() -> None:
    ours = _describe("ortserve.protos.health.health_pb2")
    theirs = _describe("grpc_health.v1.health_pb2")
    assert ours == theirs and "grpc.health.v1.Health/Check" in ours["methods"]


def test_reflection_protos_match_grpcs() -> None:
    theirs = _describe("grpc_reflection.v1alpha.reflection_pb2")
    assert _describe("ortserve.protos.reflection.v1alpha.reflection_pb2") == theirs
    v1 = json.dumps(_describe("ortserve.protos.reflection.v1.reflection_pb2"))  # the same messages, another package
    assert json.loads(v1.replace("grpc.reflection.v1.", "grpc.reflection.v1alpha.")) == theirs
