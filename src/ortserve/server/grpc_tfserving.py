"""TF Serving gRPC front end: PredictionService and ModelService (package tensorflow.serving)."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import numpy as np
from google.protobuf.message import Message

from ortserve.errors import InvalidInput
from ortserve.protos.tensorflow.core.example.example_pb2 import Example
from ortserve.protos.tensorflow.core.example.feature_pb2 import Feature
from ortserve.protos.tensorflow.core.framework.tensor_shape_pb2 import TensorShapeProto
from ortserve.protos.tensorflow.core.protobuf.meta_graph_pb2 import SignatureDef, TensorInfo
from ortserve.protos.tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    input_pb2,
    model_pb2,
    predict_pb2,
    regression_pb2,
    unsupported_pb2,
)
from ortserve.runtime.batcher import Tensors
from ortserve.runtime.model import ServedVersion, State
from ortserve.runtime.signature import Signature, TensorSpec
from ortserve.server.dataplane import DataPlane
from ortserve.server.grpc_engine import ROUTING_KEY, Call
from ortserve.server.tensor_proto import from_numpy_array, to_numpy
from ortserve.server.tf_examples import (
    Features,
    check_signature,
    classes_of,
    classifications,
    example_inputs,
    regressions,
    values_output,
)
from ortserve.server.tfserving import DEFAULT_SIGNATURE, PREDICT_METHOD

_STATE = {state: getattr(get_model_status_pb2.ModelVersionStatus, state.value) for state in State}
_UNSUPPORTED = "{} runs several signatures of one TensorFlow model at once, which ONNX models do not have; use Predict"


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


def _examples(given: input_pb2.Input) -> tuple[list[Features], Features]:
    """The request's examples and context, each feature's values as an array."""
    kind = given.WhichOneof("kind")
    if kind == "example_list":
        return [_features(example) for example in given.example_list.examples], {}
    if kind == "example_list_with_context":
        listed = given.example_list_with_context
        return [_features(example) for example in listed.examples], _features(listed.context)
    raise InvalidInput("the request's input has no examples (example_list or example_list_with_context)")


def _features(example: Example) -> Features:
    return {name: _values(feature) for name, feature in example.features.feature.items()}


def _values(feature: Feature) -> np.ndarray:
    kind = feature.WhichOneof("kind")
    if kind == "bytes_list":
        values = np.empty(len(feature.bytes_list.value), dtype=object)
        values[:] = list(feature.bytes_list.value)
        return values
    if kind == "int64_list":
        return np.array(feature.int64_list.value, dtype=np.int64)
    if kind == "float_list":
        return np.array(feature.float_list.value, dtype=np.float32)
    return np.empty(0, dtype=np.float32)  # a feature with no list: no values


def _submit(served: ServedVersion, inputs: Tensors, outputs: list[str] | None, call: Call,
            answer: Callable[[dict[str, np.ndarray]], Message]) -> None:
    """Queue the call's request; the batch's thread answers it with `answer(outputs)`. A caller who leaves
    takes its queued request with it."""
    cancel = served.submit(inputs, outputs, call.answer_with(answer), deadline_ns=call.deadline_ns,
                           run_later=call.run_later)
    if cancel is not None:
        call.on_cancel(cancel)


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
        assert served.interface is not None
        numbers = served.interface.number_inputs
        inputs = {name: to_numpy(name, tensor, keep_bytes=name in numbers) for name, tensor in request.inputs.items()}

        def answer(outputs: dict[str, np.ndarray]) -> predict_pb2.PredictResponse:
            response = predict_pb2.PredictResponse(model_spec=_answering_spec(served))
            for name, array in outputs.items():
                response.outputs[name].CopyFrom(from_numpy_array(array))
            return response

        _submit(served, inputs, list(request.output_filter) or None, call, answer)

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

    def Classify(self, request: classification_pb2.ClassificationRequest, call: Call) -> None:
        """Each example's features as the model's inputs (server.tf_examples); its scores as classes."""
        served, inputs, examples = self._example_inputs("classify", request, call)
        chosen = classes_of(served)

        def answer(outputs: dict[str, np.ndarray]) -> classification_pb2.ClassificationResponse:
            result = classification_pb2.ClassificationResult(classifications=[
                classification_pb2.Classifications(classes=[classification_pb2.Class(label=label, score=score)
                                                            for label, score in row])
                for row in classifications(served, chosen, outputs, examples)])
            return classification_pb2.ClassificationResponse(model_spec=_answering_spec(served), result=result)

        _submit(served, inputs, chosen.outputs, call, answer)

    def Regress(self, request: regression_pb2.RegressionRequest, call: Call) -> None:
        """Each example's features as the model's inputs (server.tf_examples); one value per example."""
        served, inputs, examples = self._example_inputs("regress", request, call)
        output = values_output(served)

        def answer(outputs: dict[str, np.ndarray]) -> regression_pb2.RegressionResponse:
            result = regression_pb2.RegressionResult(regressions=[
                regression_pb2.Regression(value=value) for value in regressions(output, outputs, examples)])
            return regression_pb2.RegressionResponse(model_spec=_answering_spec(served), result=result)

        _submit(served, inputs, [output], call, answer)

    def _example_inputs(self, method: str, request: classification_pb2.ClassificationRequest
                        | regression_pb2.RegressionRequest, call: Call) -> tuple[ServedVersion, Tensors, int]:
        """The version a Classify or Regress call names, its inputs read from the examples, and their count."""
        served = self._served(request.model_spec, call.metadata_value(ROUTING_KEY))
        check_signature(method, request.model_spec.signature_name)
        assert served.interface is not None
        examples, context = _examples(request.input)
        return served, example_inputs(served.interface, examples, context), len(examples)

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
