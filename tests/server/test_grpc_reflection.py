"""gRPC server reflection: gRPC's own reflection client (grpcio-reflection, v1alpha, what its tools and grpcurl's
fallback use) lists the services and builds, from descriptors alone, requests that the server answers as it answers
generated stubs; the v1 package on the wire; unknown names answered in the stream, which goes on."""

from __future__ import annotations

import grpc
import numpy as np
from google.protobuf import descriptor_pb2, message_factory
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from tritonclient.grpc import service_pb2, service_pb2_grpc

from ortserve.bench.server import RunningServer
from ortserve.protos.reflection.v1 import reflection_pb2 as v1

SERVED = {"inference.GRPCInferenceService", "tensorflow.serving.PredictionService", "tensorflow.serving.ModelService",
          "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"}


def _call(channel: grpc.Channel, pool: DescriptorPool, service: str, method: str, fill: dict) -> object:
    """A unary call built from reflected descriptors only, as grpcurl makes it from JSON."""
    described = pool.FindServiceByName(service).methods_by_name[method]
    request_type = message_factory.GetMessageClass(described.input_type)
    response_type = message_factory.GetMessageClass(described.output_type)
    invoke = channel.unary_unary(f"/{service}/{method}", request_serializer=request_type.SerializeToString,
                                 response_deserializer=response_type.FromString)
    return invoke(request_type(**fill), timeout=30)


def test_the_reflection_client_lists_every_service(server: RunningServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        assert set(ProtoReflectionDescriptorDatabase(channel).get_services()) == SERVED


def test_a_client_with_reflected_descriptors_only_calls_model_infer_and_predict(server: RunningServer) -> None:
    rows = np.random.default_rng(3).standard_normal((2, 784)).astype(np.float32)
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        pool = DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        reflected = _call(channel, pool, "inference.GRPCInferenceService", "ModelInfer", {
            "model_name": "mlp", "inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 784]}],
            "raw_input_contents": [rows.tobytes()]})
        # TF Serving's Predict reaches tensorflow.TensorProto through imports: the dependencies came along
        predicted = _call(channel, pool, "tensorflow.serving.PredictionService", "Predict", {
            "model_spec": {"name": "mlp"},
            "inputs": {"input": {"dtype": 1, "tensor_shape": {"dim": [{"size": 2}, {"size": 784}]},
                                 "tensor_content": rows.tobytes()}}})
        generated = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(service_pb2.ModelInferRequest(
            model_name="mlp", inputs=[service_pb2.ModelInferRequest.InferInputTensor(
                name="input", datatype="FP32", shape=[2, 784])], raw_input_contents=[rows.tobytes()]), timeout=30)
    expected = np.frombuffer(generated.raw_output_contents[0], np.float32).reshape(2, 10)
    assert reflected.raw_output_contents[0] == generated.raw_output_contents[0]
    np.testing.assert_allclose(np.frombuffer(predicted.outputs["logits"].tensor_content, np.float32).reshape(2, 10),
                               expected, rtol=1e-5, atol=1e-6)


def _reflect_v1(server: RunningServer, *requests: v1.ServerReflectionRequest) -> list[v1.ServerReflectionResponse]:
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stream = channel.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                                       request_serializer=v1.ServerReflectionRequest.SerializeToString,
                                       response_deserializer=v1.ServerReflectionResponse.FromString)
        return list(stream(iter(requests), timeout=30))


def _file_names(response: v1.ServerReflectionResponse) -> list[str]:
    return [descriptor_pb2.FileDescriptorProto.FromString(data).name
            for data in response.file_descriptor_response.file_descriptor_proto]


def test_v1_answers_each_request_in_order_and_goes_on_after_an_unknown_name(server: RunningServer) -> None:
    unknown, method, listed, extensions, no_file = _reflect_v1(
        server,
        v1.ServerReflectionRequest(host="h", file_containing_symbol="tensorflow.serving.SessionService"),
        v1.ServerReflectionRequest(file_containing_symbol="tensorflow.serving.PredictionService.Predict"),
        v1.ServerReflectionRequest(list_services=""),
        v1.ServerReflectionRequest(all_extension_numbers_of_type="inference.ModelInferRequest"),
        v1.ServerReflectionRequest(file_by_filename="no/such.proto"))
    assert unknown.WhichOneof("message_response") == "error_response"
    assert unknown.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
    assert "tensorflow.serving.SessionService" in unknown.error_response.error_message
    assert (unknown.valid_host, unknown.original_request.file_containing_symbol) == (
        "h", "tensorflow.serving.SessionService")
    files = _file_names(method)
    assert files[0].endswith("prediction_service.proto") and len(files) == len(set(files))
    assert any(name.endswith("tensorflow/core/framework/tensor.proto") for name in files)  # imported, not direct
    assert {service.name for service in listed.list_services_response.service} == SERVED
    assert extensions.all_extension_numbers_response.base_type_name == "inference.ModelInferRequest"
    assert list(extensions.all_extension_numbers_response.extension_number) == []
    assert no_file.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


def test_a_file_by_its_name_comes_with_what_it_imports(server: RunningServer) -> None:
    (first,) = _reflect_v1(server, v1.ServerReflectionRequest(file_containing_symbol="inference.ModelInferRequest"))
    name = _file_names(first)[0]
    (by_name,) = _reflect_v1(server, v1.ServerReflectionRequest(file_by_filename=name))
    assert _file_names(by_name) == _file_names(first)
    imported = descriptor_pb2.FileDescriptorProto.FromString(by_name.file_descriptor_response.file_descriptor_proto[0])
    assert set(imported.dependency) <= set(_file_names(by_name))
