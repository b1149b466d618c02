"""TF Serving's Classify and Regress on ONNX models, shared by its REST and gRPC front ends.

A TensorFlow model answers them through a signature that parses serialized `tf.Example`s; an ONNX model has none,
so each example's features are read as the model's inputs of the same names instead (a feature per input, its
values one row of that input; context features shared by every example), the way a Keras model with named
inputs takes the features `tf.io.parse_example` gave it. Features the model has no input for are ignored, as
parse_example ignores them.

Classify answers, for every example, a (label, score) per element of its scores output, in the model's order:
scores from the output named `scores` or the model's only floating-point output; labels from an output named
`classes` when there is one, the image labels of config.yaml or the class names of a classifier in the model
(runtime.class_labels), or the class index. Regress answers the one value
per example of the output named `outputs` or the model's only floating-point output.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from google.protobuf.message import DecodeError

from ortserve.errors import InvalidInput, require
from ortserve.protos.tensorflow.core.example.example_pb2 import Example
from ortserve.protos.tensorflow.core.example.feature_pb2 import Feature
from ortserve.runtime.model import ServedVersion
from ortserve.runtime.signature import DYNAMIC, Signature, TensorSpec
from ortserve.server.codec import text_elements
from ortserve.server.tfserving import DEFAULT_SIGNATURE

# a feature's values: float32 (float_list), int64 (int64_list) or an object array of bytes (bytes_list)
Features = dict[str, np.ndarray]
# signature keys a TensorFlow export gives these methods, besides the default one
SIGNATURE_KEYS = {"classify": ("classification", "tensorflow/serving/classify"),
                  "regress": ("regression", "tensorflow/serving/regress")}
SCORES, CLASSES, VALUES = "scores", "classes", "outputs"  # TensorFlow's output keys of the two methods


def example_features(example: Example) -> Features:
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


def takes_serialized_examples(served: ServedVersion, names: Iterable[str]) -> bool:
    """Whether a Predict naming these inputs sends serialized tf.Examples: only config.yaml's `examples_input`, of
    a model converted from a signature that parsed them (convert.parsed_examples)."""
    return served.config.examples_input is not None and set(names) == {served.config.examples_input}


def serialized_example_inputs(served: ServedVersion, strings: np.ndarray) -> dict[str, np.ndarray]:
    """The model's inputs from a Predict's serialized tf.Examples (a 1-D tensor, one example a row), as
    Classify reads examples."""
    name = served.config.examples_input
    require(strings.dtype == object and strings.ndim == 1,
            f"input {name!r} takes a 1-D tensor of serialized tf.Examples, got {strings.dtype} {list(strings.shape)}")
    examples = []
    for index, item in enumerate(strings):
        require(isinstance(item, bytes), f"input {name!r}: element {index} is text, not a serialized tf.Example")
        example = Example()
        try:
            example.ParseFromString(item)
        except DecodeError:
            raise InvalidInput(f"input {name!r}: element {index} is not a serialized tf.Example") from None
        examples.append(example_features(example))
    assert served.interface is not None
    return example_inputs(served.interface, examples, {})


def check_signature(method: str, name: str) -> None:
    accepted = ("", DEFAULT_SIGNATURE, *SIGNATURE_KEYS[method])
    require(name in accepted, f"signature {name!r} not found; {method} takes {', '.join(map(repr, accepted[1:]))} "
                              "(the model's inputs read from the examples' features of the same names)")


def example_inputs(signature: Signature, examples: list[Features], context: Features) -> dict[str, np.ndarray]:
    """The model's inputs: for each input, the feature of its name from every example (or from the context),
    one row per example."""
    require(len(examples) > 0, "the request has no examples")
    for index, example in enumerate(examples):
        shared = sorted(set(example) & set(context))
        if shared:
            raise InvalidInput(f"feature {shared[0]!r} is in example {index} and in the context; a context "
                               "feature must not appear in the examples")
    return {spec.name: _input(spec, examples, context) for spec in signature.inputs}


def _input(spec: TensorSpec, examples: list[Features], context: Features) -> np.ndarray:
    require(spec.rank > 0, f"input {spec.name!r} is a scalar: examples need inputs with a row per example")
    rows: list[np.ndarray] = []
    for index, example in enumerate(examples):
        values = example.get(spec.name, context.get(spec.name))
        require(values is not None, f"example {index} has no feature {spec.name!r} (an input of the model)")
        assert values is not None
        rows.append(values)
    for index, row in enumerate(rows):
        if len(row) != len(rows[0]):
            raise InvalidInput(f"feature {spec.name!r} has {len(rows[0])} values in example 0 and {len(row)} in "
                               f"example {index}; every example needs as many")
    row_shape = _row_shape(spec, len(rows[0]))
    stacked = np.stack(rows) if len(rows) > 1 else rows[0][np.newaxis]
    return _typed(spec, stacked).reshape((len(rows), *row_shape))


def _row_shape(spec: TensorSpec, count: int) -> tuple[int, ...]:
    """The shape of one example's row of the input: its dimensions past the first, a dynamic one sized by the
    number of values."""
    dims = spec.shape[1:]
    known = math.prod(dim for dim in dims if dim != DYNAMIC)
    dynamic = [axis for axis, dim in enumerate(dims) if dim == DYNAMIC]
    if not dynamic:
        require(count == known, f"feature {spec.name!r} has {count} values; input {spec.name!r} takes {known} an "
                                f"example (shape {list(spec.shape)})")
        return dims
    require(len(dynamic) == 1, f"input {spec.name!r} (shape {list(spec.shape)}) has several unsized dimensions "
                               "past the first, which a feature's flat values cannot fill; use Predict")
    require(known > 0 and count % known == 0, f"feature {spec.name!r} has {count} values, which do not fill "
                                               f"rows of input {spec.name!r} (shape {list(spec.shape)})")
    return tuple(count // known if axis == dynamic[0] else dim for axis, dim in enumerate(dims))


def _typed(spec: TensorSpec, values: np.ndarray) -> np.ndarray:
    """The values as the input's type, refusing what the type would change (bytes for numbers, fractions or
    out-of-range numbers for integers)."""
    target = spec.type
    kind = values.dtype.kind
    if target.is_bytes:  # ONNX Runtime's strings are text: bytes would reach the model as "b'...'"
        require(kind == "O", f"input {spec.name!r} takes text; its feature must be a bytes_list")
        return text_elements(spec.name, values)
    require(kind != "O", f"input {spec.name!r} takes {target.v2}; its feature is a bytes_list")
    wanted = target.numpy
    if wanted.kind == "f":
        return values.astype(wanted, copy=False)
    if wanted.kind == "b":
        require(bool(np.isin(values, (0, 1)).all()), f"input {spec.name!r} is BOOL: its feature's values must "
                                                     "be 0 or 1")
        return values.astype(wanted)
    require(kind in "iu", f"input {spec.name!r} takes {target.v2}; its feature must be an int64_list, not a "
                          "float_list")
    limits = np.iinfo(wanted)
    require(values.size == 0 or (int(values.min()) >= limits.min and int(values.max()) <= limits.max),
            f"feature {spec.name!r} has values outside the range of input {spec.name!r} ({target.v2})")
    return values.astype(wanted, copy=False)


@dataclass(frozen=True)
class Classes:
    """Which outputs Classify answers from: the scores, and the labels' output when the model has one."""

    scores: str
    labels: str | None

    @property
    def outputs(self) -> list[str]:
        return [self.scores] if self.labels is None else [self.scores, self.labels]


def classes_of(served: ServedVersion) -> Classes:
    signature = served.interface
    assert signature is not None
    labels = signature.output(CLASSES)
    return Classes(_numbers_output(signature, SCORES, "classify"),
                   None if labels is None else labels.name)


def values_output(served: ServedVersion) -> str:
    signature = served.interface
    assert signature is not None
    return _numbers_output(signature, VALUES, "regress")


def _numbers_output(signature: Signature, key: str, method: str) -> str:
    named = signature.output(key)
    if named is not None and _is_number(named):
        return named.name
    floats = [spec.name for spec in signature.outputs if spec.type.numpy.kind == "f"]
    require(len(floats) == 1, f"{method} answers from an output named {key!r} or the model's only floating-point "
                              f"output; the model has {len(floats)} ({', '.join(floats) or 'none'})")
    return floats[0]


def _is_number(spec: TensorSpec) -> bool:
    return not spec.type.is_bytes and spec.type.numpy.kind in "biuf"


def classifications(served: ServedVersion, chosen: Classes, outputs: dict[str, np.ndarray], examples: int
                    ) -> list[list[tuple[str, float]]]:
    """Each example's (label, score) pairs, in the order of the model's scores."""
    scores = _per_example(chosen.scores, outputs[chosen.scores], examples).astype(np.float64)
    if chosen.labels is not None:
        labels = _per_example(chosen.labels, outputs[chosen.labels], examples)
        require(labels.shape == scores.shape, f"output {chosen.labels!r} has shape {list(labels.shape)} for scores "
                                              f"of shape {list(scores.shape)}: no label for each score")
        names = [[_label(value) for value in row] for row in labels.tolist()]
    else:
        known = served.labels_of(chosen.scores)
        per_class = [known[index] if known is not None and index < len(known) else str(index)
                     for index in range(scores.shape[1])]
        names = [per_class] * examples
    return [list(zip(row_names, row_scores, strict=True)) for row_names, row_scores in zip(names, scores.tolist(),
                                                                                          strict=True)]


def regressions(name: str, outputs: dict[str, np.ndarray], examples: int) -> list[float]:
    values = _per_example(name, outputs[name], examples)
    require(values.shape[1] == 1, f"regress answers one value per example; output {name!r} has "
                                  f"{values.shape[1]} an example")
    return values[:, 0].astype(np.float64).tolist()


def _per_example(name: str, array: np.ndarray, examples: int) -> np.ndarray:
    """The output as one row of values per example."""
    if array.ndim == 0 or array.shape[0] != examples:
        raise InvalidInput(f"output {name!r} has shape {list(array.shape)}, not a row for each of the "
                           f"{examples} examples")
    return array.reshape(examples, -1)


def _label(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)
