"""Encoded images in tensor requests: an image model's image input also takes one JPEG or PNG per row as bytes, as
TF Serving clients send images (`{"b64": ...}` instances over REST, a DT_STRING tensor over gRPC), decoded as
`POST /predict` decodes them (EfficientNet-Lite0 with its real weights)."""

from __future__ import annotations

import base64
from pathlib import Path

import grpc
import httpx
import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from ortserve.bench.server import RunningServer
from ortserve.examples import demo
from ortserve.protos.tensorflow.core.framework.tensor_pb2 import TensorProto
from ortserve.protos.tensorflow.core.framework.tensor_shape_pb2 import TensorShapeProto
from ortserve.protos.tensorflow.core.framework.types_pb2 import DT_STRING
from ortserve.protos.tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
from tests.image.conftest import encode, reference_top5

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def session(image_repository: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(image_repository / demo.MODEL / "1" / "model.onnx"))


@pytest.fixture(scope="module")
def images(cat: Image.Image) -> list[bytes]:
    return [encode(cat, "JPEG", quality=90), encode(cat.convert("L").rotate(90, expand=True), "PNG")]


def _nested(value: object, depth: int) -> list:
    for _ in range(depth):
        value = [value]
    return [value]


def _top5(logits: np.ndarray) -> list[int]:
    return [int(i) for i in np.argsort(-np.asarray(logits), kind="stable")[:5]]


def test_b64_instances_over_tf_serving_rest(image_server: RunningServer, images: list[bytes],
                                            session: ort.InferenceSession) -> None:
    body = {"instances": [{"b64": base64.b64encode(image).decode()} for image in images]}
    answer = httpx.post(f"{image_server.url}/v1/models/{demo.MODEL}:predict", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    assert len(predictions) == 2
    for image, logits in zip(images, predictions, strict=True):
        assert _top5(logits) == reference_top5(session, image)


def test_a_string_tensor_over_tf_serving_grpc(image_server: RunningServer, images: list[bytes],
                                              session: ort.InferenceSession) -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = demo.MODEL
    request.inputs["input"].CopyFrom(TensorProto(dtype=DT_STRING, string_val=images, tensor_shape=TensorShapeProto(
        dim=[TensorShapeProto.Dim(size=len(images))])))
    with grpc.insecure_channel(f"127.0.0.1:{image_server.grpc_port}") as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=60)
    output = response.outputs["logits"]
    logits = np.frombuffer(output.tensor_content, np.float32).reshape([d.size for d in output.tensor_shape.dim])
    assert logits.shape[0] == 2
    for image, row in zip(images, logits, strict=True):
        assert _top5(row) == reference_top5(session, image)


@pytest.mark.parametrize(("instances", "status", "words"), [
    ([{"b64": base64.b64encode(b"not an image").decode()}], 400, "not an image in a format Pillow reads"),
    ([[{"b64": "aGk="}, {"b64": "aGk="}]], 400, "encoded images come one per row"),
    ([{"b64": "aGk="}, "text"], 400, "got text"),
    (_nested({"b64": "aGk="}, 99), 400, "nested 100 lists deep"),
])
def test_bad_encoded_images_are_refused_by_name(image_server: RunningServer, instances: list, status: int,
                                                words: str) -> None:
    answer = httpx.post(f"{image_server.url}/v1/models/{demo.MODEL}:predict", json={"instances": instances},
                        timeout=60)
    assert answer.status_code == status, answer.text
    assert words in answer.json()["error"]


def test_a_model_without_image_preprocessing_refuses_bytes_for_numbers(image_server: RunningServer) -> None:
    answer = httpx.post(f"{image_server.url}/v1/models/mlp:predict", timeout=60,
                        json={"instances": [{"b64": base64.b64encode(b"\xff\xd8").decode()}]})
    assert answer.status_code == 400
    assert "datatype BYTES, but the model expects FP32" in answer.json()["error"]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_bytes_tensors_over_kserve_v2(image_server: RunningServer, images: list[bytes],
                                      session: ort.InferenceSession, protocol: str) -> None:
    """tritonclient's BYTES tensor (binary over HTTP, raw_input_contents over gRPC) for the FP32 image input."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    module = httpclient if protocol == "http" else grpcclient
    client = (httpclient.InferenceServerClient(image_server.host_port) if protocol == "http"
              else grpcclient.InferenceServerClient(f"127.0.0.1:{image_server.grpc_port}"))
    tensor = module.InferInput("input", [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=object), **({"binary_data": True} if protocol == "http" else {}))
    logits = client.infer(demo.MODEL, [tensor]).as_numpy("logits")
    assert logits.shape[0] == 2
    for image, row in zip(images, logits, strict=True):
        assert _top5(row) == reference_top5(session, image)
