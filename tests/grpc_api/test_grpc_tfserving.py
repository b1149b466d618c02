"""TF Serving's gRPC API through the project's own stubs (no TensorFlow needed), every TensorProto encoding."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from ortserve.bench.server import RunningServer
from ortserve.protos.tensorflow.core.framework.tensor_pb2 import TensorProto
from ortserve.protos.tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

DT_FLOAT, DT_INT64, DT_STRING, DT_HALF, DT_DOUBLE = 1, 9, 7, 19, 2


@pytest.fixture(scope="module")
def channel(server: RunningServer) -> grpc.Channel:
    return grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")


@pytest.fixture(scope="module")
def predict(channel: grpc.Channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


def _tensor(dtype: int, shape: list[int], **fields) -> TensorProto:
    proto = TensorProto(dtype=dtype, **fields)
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    return proto


def _array(proto: TensorProto, dtype: np.dtype) -> np.ndarray:
    return np.frombuffer(proto.tensor_content, dtype=dtype).reshape([d.size for d in proto.tensor_shape.dim])


def test_predict_with_tensor_content(predict, reference) -> None:
    batch = np.random.default_rng(8).standard_normal((3, 784)).astype(np.float32)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mlp"
    request.inputs["input"].CopyFrom(_tensor(DT_FLOAT, [3, 784], tensor_content=batch.tobytes()))
    response = predict.Predict(request)
    (expected,) = reference("mlp").run(None, {"input": batch})
    np.testing.assert_allclose(_array(response.outputs["logits"], np.float32), expected, rtol=1e-6, atol=1e-6)
    assert response.model_spec.name == "mlp"
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"


def test_predict_with_typed_fields_and_broadcast(predict) -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "multi"
    request.inputs["a"].CopyFrom(_tensor(DT_FLOAT, [2, 4], float_val=[1, 2, 3, 4, 5, 6, 7, 8]))
    request.inputs["b"].CopyFrom(_tensor(DT_INT64, [2, 4], int64_val=[10]))  # one value fills the shape
    halves = np.array([0.5, 1.5, -2.0, 3.0, 4.0, 5.0], dtype=np.float16)
    request.inputs["half"].CopyFrom(_tensor(DT_HALF, [2, 3], half_val=halves.view(np.uint16).tolist()))
    request.inputs["text"].CopyFrom(_tensor(DT_STRING, [2], string_val=[b"cat", "héllo".encode()]))
    response = predict.Predict(request)
    np.testing.assert_array_equal(_array(response.outputs["total"], np.float32),
                                  np.arange(1, 9, dtype=np.float32).reshape(2, 4) + 10)
    np.testing.assert_array_equal(_array(response.outputs["scaled"], np.float16), (halves * 2).reshape(2, 3))
    assert response.outputs["scaled"].dtype == DT_HALF
    assert list(response.outputs["label_bytes"].string_val) == [b"cat", "héllo".encode()]


def test_output_filter_and_labels(predict, reference) -> None:
    row = np.full((1, 784), 0.3, np.float32)
    for choice, version in (({"version_label": "stable"}, 2), ({"version_label": "canary"}, 3), ({}, 3)):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "versioned"
        if choice:
            request.model_spec.version_label = choice["version_label"]
        request.inputs["input"].CopyFrom(_tensor(DT_FLOAT, [1, 784], tensor_content=row.tobytes()))
        request.output_filter.append("logits")
        response = predict.Predict(request)
        assert response.model_spec.version.value == version
        (expected,) = reference("versioned", version).run(None, {"input": row})
        np.testing.assert_allclose(_array(response.outputs["logits"], np.float32), expected, rtol=1e-6, atol=1e-6)


def test_model_metadata_holds_a_signature_def_map(predict) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "mlp"
    response = predict.GetModelMetadata(request)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    assert response.metadata["signature_def"].type_url.endswith("tensorflow.serving.SignatureDefMap")
    signature = signatures.signature_def["serving_default"]
    assert signature.method_name == "tensorflow/serving/predict"
    assert signature.inputs["input"].dtype == DT_FLOAT
    assert [d.size for d in signature.inputs["input"].tensor_shape.dim] == [-1, 784]
    assert [d.size for d in signature.outputs["logits"].tensor_shape.dim] == [-1, 10]


def test_model_status(channel: grpc.Channel) -> None:
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "versioned"
    response = stub.GetModelStatus(request)
    assert [s.version for s in response.model_version_status] == [1, 2, 3]
    assert all(s.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE for s in response.model_version_status)
    request.model_spec.version.value = 2
    assert [s.version for s in stub.GetModelStatus(request).model_version_status] == [2]
    failed = get_model_status_pb2.GetModelStatusRequest()
    failed.model_spec.name = "bad_warmup"
    (status,) = stub.GetModelStatus(failed).model_version_status
    assert status.state == get_model_status_pb2.ModelVersionStatus.END
    assert "warmup" in status.status.error_message


def _request(model: str, **tensors: TensorProto) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    for name, tensor in tensors.items():
        request.inputs[name].CopyFrom(tensor)
    return request


ROW = np.zeros((1, 784), np.float32).tobytes()
BAD_REQUESTS = [
    ("unknown-model", _request("nope", input=_tensor(DT_FLOAT, [1, 784], tensor_content=ROW)),
     grpc.StatusCode.NOT_FOUND, "'nope'"),
    ("wrong-dtype", _request("mlp", input=_tensor(DT_DOUBLE, [1, 784], double_val=[0.0])),
     grpc.StatusCode.INVALID_ARGUMENT, "FP64"),
    ("wrong-shape", _request("mlp", input=_tensor(DT_FLOAT, [1, 783], float_val=[0.0])),
     grpc.StatusCode.INVALID_ARGUMENT, "[1, 783]"),
    ("content-size", _request("mlp", input=_tensor(DT_FLOAT, [2, 784], tensor_content=ROW)),
     grpc.StatusCode.INVALID_ARGUMENT, "tensor_content has 3136 bytes"),
    ("value-count", _request("mlp", input=_tensor(DT_FLOAT, [1, 784], float_val=[1.0, 2.0])),
     grpc.StatusCode.INVALID_ARGUMENT, "2 values given"),
    ("unknown-input", _request("mlp", pixels=_tensor(DT_FLOAT, [1, 784], tensor_content=ROW)),
     grpc.StatusCode.INVALID_ARGUMENT, "unknown input 'pixels'"),
    ("missing-input", _request("multi", a=_tensor(DT_FLOAT, [1, 4], float_val=[1.0])),
     grpc.StatusCode.INVALID_ARGUMENT, "missing input"),
    ("complex-dtype", _request("mlp", input=_tensor(8, [1, 784])), grpc.StatusCode.INVALID_ARGUMENT, "dtype 8"),
    ("no-name", _request("", input=_tensor(DT_FLOAT, [1, 784], tensor_content=ROW)),
     grpc.StatusCode.INVALID_ARGUMENT, "model_spec.name"),
]


@pytest.mark.parametrize(("request_", "code", "words"), [case[1:] for case in BAD_REQUESTS],
                         ids=[case[0] for case in BAD_REQUESTS])
def test_bad_predict_requests(predict, request_: predict_pb2.PredictRequest, code: grpc.StatusCode,
                              words: str) -> None:
    with pytest.raises(grpc.RpcError) as error:
        predict.Predict(request_)
    assert error.value.code() == code
    assert words in error.value.details()


def test_unknown_label_and_version(predict) -> None:
    request = _request("versioned", input=_tensor(DT_FLOAT, [1, 784], tensor_content=ROW))
    request.model_spec.version_label = "beta"
    with pytest.raises(grpc.RpcError) as error:
        predict.Predict(request)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    request.model_spec.version.value = 7
    with pytest.raises(grpc.RpcError) as error:
        predict.Predict(request)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
