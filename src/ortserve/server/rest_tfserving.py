"""TF Serving REST front end: model status, metadata, predict in row and columnar form, classify and regress."""

from __future__ import annotations

import base64
import math
from typing import Any

import numpy as np
import simdjson

from ortserve.errors import InvalidInput, require
from ortserve.runtime.model import ServedVersion
from ortserve.runtime.signature import Signature, TensorSpec
from ortserve.runtime.validate import input_spec
from ortserve.server.codec import (
    MAX_DIMENSIONS,
    array_from_json,
    byte_elements,
    dumps,
    is_array,
    is_lazy_array,
    json_tensor,
    loads,
    text_elements,
)
from ortserve.server.dataplane import DataPlane, parse_version
from ortserve.server.http import Request, Response, Router, json_response
from ortserve.server.tf_examples import (
    Features,
    check_signature,
    classes_of,
    classifications,
    example_inputs,
    regressions,
    serialized_example_inputs,
    takes_serialized_examples,
    values_output,
)
from ortserve.server.tfserving import DEFAULT_SIGNATURE, signature_def, version_status

MODEL_PATH = r"/v1/models/(?P<model>[^/:]+)(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"


def _unwrap_b64(value: Any) -> Any:
    """Replace every {"b64": "..."} in a nested JSON value by its decoded bytes."""
    if isinstance(value, list):
        return [_unwrap_b64(item) for item in value]
    if isinstance(value, dict):
        require(set(value) == {"b64"} and isinstance(value["b64"], str),
                 f"an object inside a tensor must be {{\"b64\": \"...\"}}, got keys {sorted(value)}")
        try:
            return base64.b64decode(value["b64"], validate=True)
        except ValueError as exc:  # binascii.Error, and characters outside ASCII
            raise InvalidInput(f"invalid base64 value: {exc}") from None
    return value


def _tensor(spec: TensorSpec, value: Any) -> np.ndarray:
    if spec.type.is_bytes:
        return text_elements(spec.name, np.array(_unwrapped(spec.name, value), dtype=object))
    if _holds_objects(value):  # {"b64": ...} for numbers: an image model's encoded images
        return byte_elements(spec.name, _object_array(_unwrapped(spec.name, value)))
    return array_from_json(spec.name, value, spec.type)


def _unwrapped(name: str, value: Any) -> Any:
    """The value as Python lists, every {"b64": ...} in it decoded."""
    plain = value.as_list() if is_lazy_array(value) else value
    try:
        return _unwrap_b64(plain)
    except RecursionError:
        raise InvalidInput(f"input {name!r} is nested too deeply for a tensor (at most {MAX_DIMENSIONS} "
                           "dimensions)") from None


def _holds_objects(value: Any) -> bool:
    """Whether a tensor's first element is a JSON object (looked up without converting a lazy array)."""
    while (isinstance(value, list) or is_lazy_array(value)) and len(value):
        value = value[0]
    return isinstance(value, dict | simdjson.Object)


def _object_array(nested: Any) -> np.ndarray:
    """A nested list of bytes as an object array of its shape (numpy would make bytes a fixed-width type)."""
    shape: list[int] = []
    probe = nested
    while isinstance(probe, list):
        shape.append(len(probe))
        probe = probe[0] if probe else None
    if len(shape) > MAX_DIMENSIONS:
        raise InvalidInput(f"a tensor of {{\"b64\": ...}} values is nested {len(shape)} lists deep; a tensor has at "
                           f"most {MAX_DIMENSIONS} dimensions")
    flat = np.empty(math.prod(shape), dtype=object)
    try:
        flat[:] = np.array(nested, dtype=object).reshape(-1)
    except ValueError:
        raise InvalidInput("a tensor of {\"b64\": ...} values is ragged: its lists differ in length") from None
    return flat.reshape(shape)


def _wrap_b64(array: np.ndarray) -> Any:
    """Outputs whose name ends in _bytes go back base64-encoded, as TF Serving does."""
    flat = [{"b64": base64.b64encode(item if isinstance(item, bytes) else str(item).encode()).decode()}
            for item in array.reshape(-1)]
    wrapped = np.empty(len(flat), dtype=object)
    wrapped[:] = flat
    return wrapped.reshape(array.shape).tolist()


def _output_value(name: str, array: np.ndarray) -> Any:
    return _wrap_b64(array) if name.endswith("_bytes") else json_tensor(array)


def _row_inputs(signature: Signature, instances: Any) -> dict[str, np.ndarray]:
    require(is_array(instances) and len(instances) > 0, "'instances' must be a non-empty list")
    if isinstance(instances, list) and all(isinstance(row, dict) and set(row) != {"b64"} for row in instances):
        names = set(instances[0])
        require(all(set(row) == names for row in instances), "every instance must name the same inputs")
        inputs = {}
        for name in names:
            inputs[name] = _tensor(input_spec(signature, name), [row[name] for row in instances])
        return inputs
    require(len(signature.inputs) == 1,
             f"the model has {len(signature.inputs)} inputs: each instance must be an object naming them")
    spec = signature.inputs[0]
    return {spec.name: _tensor(spec, instances)}


def _columnar_inputs(signature: Signature, value: Any) -> dict[str, np.ndarray]:
    if isinstance(value, dict) and set(value) != {"b64"}:
        inputs = {}
        for name, tensor in value.items():
            inputs[name] = _tensor(input_spec(signature, name), tensor)
        return inputs
    require(len(signature.inputs) == 1,
             f"the model has {len(signature.inputs)} inputs: 'inputs' must be an object naming them")
    spec = signature.inputs[0]
    return {spec.name: _tensor(spec, value)}


def _serialized_examples(served: ServedVersion, value: Any) -> np.ndarray | None:
    """The serialized tf.Examples of a Predict to a model that takes them (tf_examples.takes_serialized_examples):
    named as its examples input in either format ({"inputs": {"examples": [...]}}, or instances {"examples": ...}),
    or unnamed {"b64": ...} values; None for a request of the model's own inputs."""
    name = served.config.examples_input
    if name is None:
        return None
    if isinstance(value, dict) and takes_serialized_examples(served, value):
        value = value[name]
    elif isinstance(value, list) and value and all(isinstance(row, dict) for row in value):
        if all(takes_serialized_examples(served, row) for row in value):
            value = [row[name] for row in value]
        elif not all(set(row) == {"b64"} for row in value):
            return None
    else:
        return None
    return _object_array(_unwrapped(name, value))  # serialized_example_inputs names what is not bytes


def _row_predictions(results: dict[str, np.ndarray]) -> Any:
    if len(results) == 1:  # predictions are a list, even of a scalar output's one value
        ((name, array),) = results.items()
        return _output_value(name, array.reshape(1) if array.ndim == 0 else array)
    rows = {array.shape[0] if array.ndim else 0 for array in results.values()}
    require(len(rows) == 1 and 0 not in rows,
             "the outputs do not share a batch dimension; ask for the columnar format ('inputs')")
    encoded = {name: _output_value(name, array) for name, array in results.items()}
    return [{name: values[row] for name, values in encoded.items()} for row in range(rows.pop())]


def _features(where: str, value: Any) -> Features:
    """An example (or the context) in TF Serving's JSON: each feature a value or a flat list of them, numbers
    (whole ones an int64_list, any fraction a float_list) or strings and {"b64": ...} (a bytes_list)."""
    require(isinstance(value, dict), f"{where} must be an object of features, got {type(value).__name__}")
    return {name: _feature(where, name, values) for name, values in value.items()}


def _feature(where: str, name: str, value: Any) -> np.ndarray:
    values = value if isinstance(value, list) else [value]
    if values and all(isinstance(item, str | dict) for item in values):
        decoded = [item.encode() if isinstance(item, str) else _unwrap_b64(item) for item in values]
        array = np.empty(len(decoded), dtype=object)
        array[:] = decoded
        return array
    require(all(isinstance(item, int | float) for item in values),
            f"{where}: feature {name!r} must be a number, a string or a flat list of one kind of them")
    if all(isinstance(item, int) for item in values):
        try:
            return np.array(values, dtype=np.int64)
        except OverflowError:
            raise InvalidInput(f"{where}: feature {name!r} has a whole number past 64 bits") from None
    return np.array(values, dtype=np.float32)


class TfServingRest:
    def __init__(self, plane: DataPlane) -> None:
        self._plane = plane

    def routes(self, router: Router) -> None:
        router.add("POST", MODEL_PATH + ":predict", self.predict)
        router.add("GET", MODEL_PATH, self.status)
        router.add("GET", MODEL_PATH + "/metadata", self.metadata)
        router.add("POST", MODEL_PATH + r":(?P<method>classify|regress)", self.classify_or_regress)

    def _served(self, params: dict[str, str], routing_key: str | None = None) -> ServedVersion:
        return self._plane.version(params["model"], parse_version(params.get("version")), params.get("label"),
                                   routing_key)

    async def status(self, request: Request, params: dict[str, str]) -> Response:
        model = self._plane.model(params["model"])
        versions = model.status_versions(parse_version(params.get("version")), params.get("label"))
        return json_response({"model_version_status": [version_status(served) for served in versions]})

    async def metadata(self, request: Request, params: dict[str, str]) -> Response:
        served = self._served(params)
        assert served.interface is not None
        return json_response({
            "model_spec": {"name": served.model, "signature_name": "", "version": str(served.version)},
            "metadata": {
                "signature_def": {
                    "signature_def": {DEFAULT_SIGNATURE: signature_def(served.interface)},
                },
                "execution_providers": served.providers,
            },
        })

    async def classify_or_regress(self, request: Request, params: dict[str, str]) -> Response:
        method = params["method"]
        served = self._served(params, request.routing_key)
        signature = served.interface
        assert signature is not None
        document = loads(request.body)
        require(isinstance(document, dict), "the request body must be a JSON object")
        name = document.get("signature_name", "")
        require(isinstance(name, str), "'signature_name' must be a string")
        check_signature(method, name)
        examples = document.get("examples")
        require(isinstance(examples, list), "'examples' must be a list of objects, one per example")
        inputs = example_inputs(signature, [_features(f"example {index}", example)
                                            for index, example in enumerate(examples)],
                                _features("'context'", document.get("context", {})))
        served.precheck()
        if method == "classify":
            chosen = classes_of(served)
            results = await served.infer(inputs, chosen.outputs, gone=request.disconnected)
            pairs = classifications(served, chosen, results, len(examples))
            return json_response({"results": [[[label, score] for label, score in row] for row in pairs]})
        output = values_output(served)
        results = await served.infer(inputs, [output], gone=request.disconnected)
        return json_response({"results": regressions(output, results, len(examples))})

    async def predict(self, request: Request, params: dict[str, str]) -> Response:
        served = self._served(params, request.routing_key)
        signature = served.interface
        assert signature is not None
        document = loads(request.body, frozenset({"instances", "inputs"}))
        require(isinstance(document, dict), "the request body must be a JSON object")
        signature_name = document.get("signature_name", DEFAULT_SIGNATURE)
        require(signature_name in ("", DEFAULT_SIGNATURE),
                 f"signature {signature_name!r} not found; the model has only {DEFAULT_SIGNATURE!r}")
        has_rows, has_columns = "instances" in document, "inputs" in document
        require(has_rows != has_columns,
                 "give exactly one of 'instances' (row format) or 'inputs' (columnar format)")
        served.precheck()
        examples = _serialized_examples(served, document["instances"] if has_rows else document["inputs"])
        if examples is not None:
            inputs = serialized_example_inputs(served, examples)
        elif has_rows:
            inputs = _row_inputs(signature, document["instances"])
        else:
            inputs = _columnar_inputs(signature, document["inputs"])
        results = await served.infer(inputs, gone=request.disconnected)
        arrays = list(results.values())
        if has_rows:
            return Response(200, dumps({"predictions": _row_predictions(results)}, arrays))
        if len(results) == 1:
            ((name, array),) = results.items()
            return Response(200, dumps({"outputs": _output_value(name, array)}, arrays))
        return Response(200, dumps({"outputs": {n: _output_value(n, a) for n, a in results.items()}}, arrays))
