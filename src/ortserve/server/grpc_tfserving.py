"""TF Serving gRPC front end: PredictionService and ModelService (package tensorflow.serving)."""

from __future__ import annotations

import grpc
import numpy as np

from ortserve.errors import InvalidInput
from ortserve.protos.tensorflow.core.framework.tensor_shape_pb2 import TensorShapeProto
from ortserve.protos.tensorflow.core.protobuf.meta_graph_pb2 import SignatureDef, TensorInfo
from ortserve.protos.tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    predict_pb2,
    unsupported_pb2,
)
from ortserve.runtime.model import ServedVersion, State
from ortserve.runtime.signature import Signature, TensorSpec
from ortserve.server.dataplane import DataPlane
from ortserve.server.grpc_engine import ROUTING_KEY, Call
from ortserve.server.tensor_proto import from_numpy_array, to_numpy
from ortserve.server.tfserving import DEFAULT_SIGNATURE, PREDICT_METHOD

_STATE = {state: getattr(get_model_status_pb2.ModelVersionStatus, state.value) for state in State}
_UNSUPPORTED = "{} needs a tensorflow.Example signature, which ONNX models do not have; use Predict"


def _version_choice(spec: model_pb2.ModelSpec) -> tuple[int | None, str | None]:
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        if spec.version.value < 1:
            raise InvalidInput(f"version {spec.version.value} is not a positive integer")
        return spec.version.value, None
    if choice == "version_label":
        return None, spec.version_label
    return None, None


def _check_signature(spec: model_pb2.ModelSpec) -> None:
    if spec.signature_name not in ("", DEFAULT_SIGNATURE):
        raise InvalidInput(f"signature {spec.signature_name!r} not found; the model has only {DEFAULT_SIGNATURE!r}")


def _answering_spec(served: ServedVersion) -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=served.model, signature_name=DEFAULT_SIGNATURE)
    spec.version.value = served.version
    return spec


def _tensor_info(spec: TensorSpec) -> TensorInfo:
    shape = TensorShapeProto(dim=[TensorShapeProto.Dim(size=size) for size in spec.shape])
    return TensorInfo(name=spec.name, dtype=spec.type.tf_enum, tensor_shape=shape)  # type: ignore[arg-type]


def _signature_def(signature: Signature) -> SignatureDef:
    return SignatureDef(
        inputs={spec.name: _tensor_info(spec) for spec in signature.inputs},
        outputs={spec.name: _tensor_info(spec) for spec in signature.outputs},
        method_name=PREDICT_METHOD,
    )


class PredictionService:
    """tensorflow.serving.PredictionService's methods, served by grpc_engine."""

    def __init__(self, plane: DataPlane) -> None:
        self._plane = plane

    def _served(self, spec: model_pb2.ModelSpec, routing_key: str | None = None) -> ServedVersion:
        if not spec.name:
            raise InvalidInput("model_spec.name is empty")
        version, label = _version_choice(spec)
        return self._plane.version(spec.name, version, label, routing_key)

    def Predict(self, request: predict_pb2.PredictRequest, call: Call) -> None:
        """On the gRPC thread: decode and queue; the batch worker builds and sends the answer."""
        served = self._served(request.model_spec, call.metadata_value(ROUTING_KEY))
        _check_signature(request.model_spec)
        inputs = {name: to_numpy(name, tensor) for name, tensor in request.inputs.items()}

        def answer(outputs: dict[str, np.ndarray]) -> predict_pb2.PredictResponse:
            response = predict_pb2.PredictResponse(model_spec=_answering_spec(served))
            for name, array in outputs.items():
                response.outputs[name].CopyFrom(from_numpy_array(array))
            return response

        cancel = served.submit(inputs, list(request.output_filter) or None, call.answer_with(answer),
                               deadline_ns=call.deadline_ns, run_later=call.run_later)
        if cancel is not None:
            call.on_cancel(cancel)

    async def GetModelMetadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest
                               ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        served = self._served(request.model_spec)
        fields = list(request.metadata_field)
        if fields != ["signature_def"]:
            raise InvalidInput(f"metadata_field must be ['signature_def'], got {fields}")
        assert served.interface is not None
        signatures = get_model_metadata_pb2.SignatureDefMap()
        signatures.signature_def[DEFAULT_SIGNATURE].CopyFrom(_signature_def(served.interface))
        response = get_model_metadata_pb2.GetModelMetadataResponse(model_spec=_answering_spec(served))
        response.metadata["signature_def"].Pack(signatures)
        return response

    def Classify(self, request: unsupported_pb2.ClassificationRequest, call: Call) -> None:
        call.abort(grpc.StatusCode.UNIMPLEMENTED, _UNSUPPORTED.format("Classify"))

    def Regress(self, request: unsupported_pb2.RegressionRequest, call: Call) -> None:
        call.abort(grpc.StatusCode.UNIMPLEMENTED, _UNSUPPORTED.format("Regress"))

    def MultiInference(self, request: unsupported_pb2.MultiInferenceRequest, call: Call) -> None:
        call.abort(grpc.StatusCode.UNIMPLEMENTED, _UNSUPPORTED.format("MultiInference"))


class ModelService:
    """tensorflow.serving.ModelService's methods, served by grpc_engine."""

    def __init__(self, plane: DataPlane) -> None:
        self._plane = plane

    async def GetModelStatus(self, request: get_model_status_pb2.GetModelStatusRequest
                             ) -> get_model_status_pb2.GetModelStatusResponse:
        model = self._plane.model(request.model_spec.name)
        chosen = model.status_versions(*_version_choice(request.model_spec))
        response = get_model_status_pb2.GetModelStatusResponse()
        for served in chosen:
            status = response.model_version_status.add(version=served.version, state=_STATE[served.state])
            status.status.error_message = served.error
            status.status.error_code = 2 if served.state is State.END and served.error else 0  # UNKNOWN or OK
        return response

    def HandleReloadConfigRequest(self, request: unsupported_pb2.ReloadConfigRequest, call: Call) -> None:
        call.abort(grpc.StatusCode.UNIMPLEMENTED, "HandleReloadConfigRequest is not supported: ortserve reads "
                   "models from its repository; reload one with POST /v2/repository/models/{m}/load")
