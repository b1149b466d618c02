"""TF Serving gRPC front end: PredictionService and ModelService (package tensorflow.serving)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from google.protobuf.message import Message

from ortserve.errors import ConfigError, InvalidInput, require
from ortserve.protos.tensorflow.core.framework.tensor_shape_pb2 import TensorShapeProto
from ortserve.protos.tensorflow.core.protobuf.meta_graph_pb2 import SignatureDef, TensorInfo
from ortserve.protos.tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    input_pb2,
    model_management_pb2,
    model_pb2,
    predict_pb2,
    regression_pb2,
)
from ortserve.protos.tensorflow_serving.util.status_pb2 import StatusProto
from ortserve.repository.tf_model_config import model_entries
from ortserve.runtime.batcher import Tensors
from ortserve.runtime.model import ServedVersion, State
from ortserve.runtime.signature import Signature, TensorSpec
from ortserve.server.dataplane import DataPlane
from ortserve.server.grpc_engine import ROUTING_KEY, Call
from ortserve.server.tensor_proto import from_numpy_array, to_numpy
from ortserve.server.tf_examples import (
    Classes,
    Features,
    check_signature,
    classes_of,
    classifications,
    example_features,
    example_inputs,
    regressions,
    serialized_example_inputs,
    takes_serialized_examples,
    values_output,
)
from ortserve.server.tfserving import DEFAULT_SIGNATURE, PREDICT_METHOD

_STATE = {state: getattr(get_model_status_pb2.ModelVersionStatus, state.value) for state in State}
# MultiInference's method names, as the Classify and Regress methods they stand for
_TASK_METHODS = {"tensorflow/serving/classify": "classify", "tensorflow/serving/regress": "regress"}


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


def _answering_spec(served: ServedVersion, signature: str = "") -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=served.model, signature_name=signature or DEFAULT_SIGNATURE)
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
        return [example_features(example) for example in given.example_list.examples], {}
    if kind == "example_list_with_context":
        listed = given.example_list_with_context
        return [example_features(example) for example in listed.examples], example_features(listed.context)
    raise InvalidInput("the request's input has no examples (example_list or example_list_with_context)")


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
        if takes_serialized_examples(served, request.inputs):
            ((name, tensor),) = request.inputs.items()
            inputs = serialized_example_inputs(served, to_numpy(name, tensor, keep_bytes=True))
        else:
            inputs = {name: to_numpy(name, tensor, keep_bytes=name in numbers)
                      for name, tensor in request.inputs.items()}

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
        check_signature("classify", request.model_spec.signature_name)
        served, inputs, examples = self._example_inputs(request.model_spec, request.input, call)
        chosen = classes_of(served)

        def answer(outputs: dict[str, np.ndarray]) -> classification_pb2.ClassificationResponse:
            return classification_pb2.ClassificationResponse(
                model_spec=_answering_spec(served, request.model_spec.signature_name),
                result=_classification_result(served, chosen, outputs, examples))

        _submit(served, inputs, chosen.outputs, call, answer)

    def Regress(self, request: regression_pb2.RegressionRequest, call: Call) -> None:
        """Each example's features as the model's inputs (server.tf_examples); one value per example."""
        check_signature("regress", request.model_spec.signature_name)
        served, inputs, examples = self._example_inputs(request.model_spec, request.input, call)
        output = values_output(served)

        def answer(outputs: dict[str, np.ndarray]) -> regression_pb2.RegressionResponse:
            return regression_pb2.RegressionResponse(
                model_spec=_answering_spec(served, request.model_spec.signature_name),
                result=_regression_result(output, outputs, examples))

        _submit(served, inputs, [output], call, answer)

    def MultiInference(self, request: inference_pb2.MultiInferenceRequest, call: Call) -> None:
        """Classify and Regress tasks on one model's examples (each on a signature of its own, as TF Serving
        requires), answered from one run of the model."""
        methods = _task_methods(request.tasks)
        spec = request.tasks[0].model_spec
        served, inputs, examples = self._example_inputs(spec, request.input, call)
        chosen = classes_of(served) if "classify" in methods else None
        output = values_output(served) if "regress" in methods else None
        wanted = [*(chosen.outputs if chosen is not None else []), *([output] if output is not None else [])]

        def answer(outputs: dict[str, np.ndarray]) -> inference_pb2.MultiInferenceResponse:
            response = inference_pb2.MultiInferenceResponse()
            for task, method in zip(request.tasks, methods, strict=True):
                result = response.results.add(model_spec=_answering_spec(served, task.model_spec.signature_name))
                if method == "classify":
                    assert chosen is not None
                    result.classification_result.CopyFrom(_classification_result(served, chosen, outputs, examples))
                else:
                    assert output is not None
                    result.regression_result.CopyFrom(_regression_result(output, outputs, examples))
            return response

        _submit(served, inputs, list(dict.fromkeys(wanted)), call, answer)

    def _example_inputs(self, spec: model_pb2.ModelSpec, given: input_pb2.Input, call: Call
                        ) -> tuple[ServedVersion, Tensors, int]:
        """The version `spec` names, its inputs read from the examples, and their count."""
        served = self._served(spec, call.metadata_value(ROUTING_KEY))
        assert served.interface is not None
        examples, context = _examples(given)
        return served, example_inputs(served.interface, examples, context), len(examples)


def _task_methods(tasks: Sequence[inference_pb2.InferenceTask]) -> list[str]:
    """Each task's method ("classify" or "regress"), once the tasks are found to name one model and version and
    each a signature of its own, as TF Serving checks them."""
    require(len(tasks) > 0, "the request has no tasks")
    first = tasks[0].model_spec
    evaluated: set[str] = set()
    methods = []
    for index, task in enumerate(tasks):
        spec = task.model_spec
        require(spec.name == first.name, f"task {index} names model {spec.name!r} and task 0 {first.name!r}: the "
                                         "tasks of a MultiInference request must name the same model")
        require(_version_choice(spec) == _version_choice(first), f"task {index} names another version or label "
                                                                 "than task 0: the tasks must name the same one")
        method = _TASK_METHODS.get(task.method_name)
        if method is None:
            raise InvalidInput(f"task {index}: method_name {task.method_name!r} is not supported; MultiInference "
                               f"runs {' and '.join(map(repr, _TASK_METHODS))}")
        check_signature(method, spec.signature_name)
        signature = spec.signature_name or DEFAULT_SIGNATURE
        require(signature not in evaluated, f"task {index}: signature {signature!r} is evaluated twice; give each "
                                            "task a signature of its own (for example 'classification' and "
                                            "'regression')")
        evaluated.add(signature)
        methods.append(method)
    return methods


def _classification_result(served: ServedVersion, chosen: Classes, outputs: dict[str, np.ndarray], examples: int
                           ) -> classification_pb2.ClassificationResult:
    return classification_pb2.ClassificationResult(classifications=[
        classification_pb2.Classifications(classes=[classification_pb2.Class(label=label, score=score)
                                                    for label, score in row])
        for row in classifications(served, chosen, outputs, examples)])


def _regression_result(output: str, outputs: dict[str, np.ndarray], examples: int
                       ) -> regression_pb2.RegressionResult:
    return regression_pb2.RegressionResult(regressions=[
        regression_pb2.Regression(value=value) for value in regressions(output, outputs, examples)])


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

    async def HandleReloadConfigRequest(self, request: model_management_pb2.ReloadConfigRequest, call: Call
                                        ) -> model_management_pb2.ReloadConfigResponse:
        """Serve the models the ModelServerConfig lists, and no others (a server started with
        --model-config-file); answers once each listed model has loaded or failed."""
        try:
            entries = model_entries(request.config)
        except ConfigError as exc:  # the request's config itself: its problem, not the server's
            raise InvalidInput(str(exc)) from None
        await self._plane.reload_config(entries, call.metadata_value("authorization"))
        return model_management_pb2.ReloadConfigResponse(status=StatusProto(error_code=0))
