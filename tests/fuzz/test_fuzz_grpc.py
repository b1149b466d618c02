"""Property: whatever a client sends to either gRPC service (KServe V2 and TF Serving), the call ends OK or with a
client-error status (INVALID_ARGUMENT, NOT_FOUND, ...) or the UNAVAILABLE of a model that cannot serve, never
INTERNAL or UNKNOWN or a dropped connection; the server stays ready. Messages are built from the protos with
every field generated, then also sent as raw bytes that are not valid protobuf. Repeatable (derandomized);
ORTSERVE_FUZZ_EXAMPLES runs more (`make fuzz`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2

from ortserve.bench.server import RunningServer, start_server
from ortserve.protos.tensorflow.core.framework.tensor_pb2 import TensorProto
from ortserve.protos.tensorflow_serving.apis import predict_pb2
from tests.fuzz import strategies as gen
from tests.fuzz.settings import FUZZ

pytestmark = pytest.mark.slow

CLIENT_ERRORS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION,
                 grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.RESOURCE_EXHAUSTED,
                 grpc.StatusCode.DEADLINE_EXCEEDED}
# what a model that cannot serve says with UNAVAILABLE (a transport failure says something else)
SERVER_REFUSALS = ("not available", "failed to load", "overloaded", "no available version")
V2_METHODS = ["ModelInfer", "ModelMetadata", "ModelReady", "ServerMetadata", "ModelConfig", "ModelStatistics",
              "RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload"]
TFS_METHODS = ["tensorflow.serving.PredictionService/Predict", "tensorflow.serving.PredictionService/Classify",
               "tensorflow.serving.PredictionService/Regress", "tensorflow.serving.PredictionService/GetModelMetadata",
               "tensorflow.serving.ModelService/GetModelStatus"]


@pytest.fixture(scope="module")
def fuzzed(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with start_server(repository, tmp_path_factory.mktemp("fuzz-grpc-logs") / "server.log") as running:
        yield running
        assert httpx.get(f"{running.url}/v2/health/ready", timeout=10).status_code == 200
        assert "Traceback" not in running.log(), running.log()[-3000:]


@pytest.fixture(scope="module")
def channel(fuzzed: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{fuzzed.grpc_port}") as opened:
        yield opened


def _ended_well(call: object) -> None:
    """Run `call`; its error, if any, must be the client's or a model's refusal."""
    try:
        call()  # type: ignore[operator]
    except grpc.RpcError as error:
        code, details = error.code(), error.details() or ""  # type: ignore[attr-defined]
        if code is grpc.StatusCode.UNAVAILABLE:
            assert any(words in details for words in SERVER_REFUSALS), (code, details)
        else:
            assert code in CLIENT_ERRORS, (code, details)


int64s = st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=8)
uint64s = st.lists(st.integers(min_value=0, max_value=2**64 - 1), max_size=8)
int32s = st.lists(st.integers(min_value=-(2**31), max_value=2**31 - 1), max_size=8)
uint32s = st.lists(st.integers(min_value=0, max_value=2**32 - 1), max_size=8)
floats = st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=40)
doubles = st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=8)
blobs = st.lists(st.binary(max_size=40), max_size=4)

contents = st.builds(service_pb2.InferTensorContents, bool_contents=st.lists(st.booleans(), max_size=8),
                     int_contents=int32s, int64_contents=int64s, uint_contents=uint32s, uint64_contents=uint64s,
                     fp32_contents=floats, fp64_contents=doubles, bytes_contents=blobs)
parameter = st.one_of(st.builds(service_pb2.InferParameter, bool_param=st.booleans()),
                      st.builds(service_pb2.InferParameter, int64_param=st.integers(-(2**63), 2**63 - 1)),
                      st.builds(service_pb2.InferParameter, string_param=st.text(max_size=10)),
                      st.builds(service_pb2.InferParameter, double_param=st.floats()))
parameters = st.dictionaries(st.sampled_from(["timeout", "binary_data_output", "priority", "x"]), parameter,
                             max_size=2)
infer_input = st.builds(service_pb2.ModelInferRequest.InferInputTensor, name=gen.names,
                        datatype=st.one_of(st.sampled_from(gen.V2_DATATYPES), st.text(max_size=5)),
                        shape=st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=5)
                        | st.lists(st.integers(min_value=-2, max_value=800), max_size=3),
                        parameters=parameters, contents=st.one_of(st.none(), contents))
infer_request = st.builds(
    service_pb2.ModelInferRequest, model_name=st.sampled_from(gen.MODELS), model_version=st.text(max_size=4),
    id=st.text(max_size=6), parameters=parameters, inputs=st.lists(infer_input, max_size=3),
    outputs=st.lists(st.builds(service_pb2.ModelInferRequest.InferRequestedOutputTensor, name=gen.names),
                     max_size=2),
    raw_input_contents=st.lists(st.binary(max_size=3200), max_size=3))


@FUZZ
@given(request=infer_request)
def test_v2_model_infer(channel: grpc.Channel, request: service_pb2.ModelInferRequest) -> None:
    infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                request_serializer=service_pb2.ModelInferRequest.SerializeToString,
                                response_deserializer=service_pb2.ModelInferResponse.FromString)
    _ended_well(lambda: infer(request, timeout=30))


@st.composite
def tensor_proto(draw: st.DrawFn) -> TensorProto:
    proto = TensorProto(dtype=draw(st.integers(min_value=-1, max_value=30)),
                        tensor_content=draw(st.binary(max_size=3200)), float_val=draw(floats),
                        double_val=draw(doubles), int_val=draw(int32s), int64_val=draw(int64s),
                        string_val=draw(blobs), bool_val=draw(st.lists(st.booleans(), max_size=4)),
                        half_val=draw(st.lists(st.integers(min_value=0, max_value=65535), max_size=4)),
                        uint32_val=draw(uint32s), uint64_val=draw(uint64s))
    for size in draw(st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=4)
                     | st.lists(st.integers(min_value=-2, max_value=800), max_size=3)):
        proto.tensor_shape.dim.add(size=size)
    proto.tensor_shape.unknown_rank = draw(st.booleans())
    return proto


@FUZZ
@given(model=st.sampled_from(gen.MODELS), signature=st.one_of(st.just(""), st.text(max_size=8)),
       inputs=st.dictionaries(gen.names, tensor_proto(), max_size=3),
       output_filter=st.lists(gen.names, max_size=2), version=st.one_of(st.none(), st.integers(-5, 2**62)))
def test_tf_serving_predict(channel: grpc.Channel, model: str, signature: str, inputs: dict[str, TensorProto],
                            output_filter: list[str], version: int | None) -> None:
    request = predict_pb2.PredictRequest(inputs=inputs, output_filter=output_filter)
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    predict = channel.unary_unary("/tensorflow.serving.PredictionService/Predict",
                                  request_serializer=predict_pb2.PredictRequest.SerializeToString,
                                  response_deserializer=predict_pb2.PredictResponse.FromString)
    _ended_well(lambda: predict(request, timeout=30))


@FUZZ
@given(method=st.sampled_from([f"inference.GRPCInferenceService/{name}" for name in V2_METHODS] + TFS_METHODS),
       payload=st.binary(max_size=400))
def test_raw_bytes_to_every_method(channel: grpc.Channel, method: str, payload: bytes) -> None:
    """Bytes that are (mostly) not the method's message, as a broken or hostile client sends them."""
    call = channel.unary_unary(f"/{method}", request_serializer=None, response_deserializer=None)
    _ended_well(lambda: call(payload, timeout=30))
