"""SavedModels whose signature takes serialized `tf.Example`s and parses them in the graph (TF Serving's classic
export: an Estimator's parsing serving input, or a Keras model behind `tf.io.parse_example`). ONNX has no such
parser, and ortserve parses tf.Examples itself (server.tf_examples: Classify, Regress, MultiInference), so the
model is converted from the parser's outputs on: one input per dense feature, named by its key, of shape
[batch, *the feature's shape]. Parity feeds the TensorFlow signature the same features serialized as examples.

Only dense features are carried (sparse and ragged ones have no fixed shape for an ONNX input): a parser that
reads any is refused by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ortserve.convert.spec import InputSpec
from ortserve.errors import InvalidInput

_PARSERS = ("ParseExampleV2", "ParseExample")


@dataclass(frozen=True)
class ParsedExamples:
    string_input: str  # the signature's input of serialized examples
    tensors: list[str]  # the parser's dense outputs in the frozen graph, where the ONNX graph starts
    features: list[InputSpec]  # what the ONNX model takes instead: one input per dense feature


def find_parser(graph_def: Any, string_input: str) -> ParsedExamples | None:
    """The tf.Example parser of a frozen graph whose one input is a string tensor; None when it has none."""
    import tensorflow as tf

    parsers = [node for node in graph_def.node if node.op in _PARSERS]
    if not parsers:
        return None
    if len(parsers) > 1:
        raise InvalidInput(f"the signature parses its examples {len(parsers)} times; ortserve converts a model that "
                           "parses them once")
    parser = parsers[0]
    constants = {node.name: node for node in graph_def.node if node.op == "Const"}
    if parser.op == "ParseExampleV2":
        sparse = parser.attr["num_sparse"].i
        ragged = len(parser.attr["ragged_value_types"].list.type)
        keys = _strings(constants, parser.input[3])
    else:
        sparse, ragged = parser.attr["Nsparse"].i, 0
        keys = [key for name in parser.input[2 + sparse:2 + sparse + parser.attr["Ndense"].i]
                for key in _strings(constants, name)]
    if sparse or ragged:
        raise InvalidInput(f"the signature parses {sparse} sparse and {ragged} ragged features from its examples; "
                           "ortserve converts models that read dense features only (tf.io.FixedLenFeature)")
    types, shapes = parser.attr["Tdense"].list.type, parser.attr["dense_shapes"].list.shape
    features = []
    for key, dtype, shape in zip(keys, types, shapes, strict=True):
        dims = tf.TensorShape(shape)
        if not dims.is_fully_defined():
            raise InvalidInput(f"feature {key!r} has no fixed shape ({dims}); ortserve converts FixedLenFeatures")
        features.append(InputSpec(key, np.dtype(tf.as_dtype(dtype).as_numpy_dtype), ("batch", *dims.as_list())))
    return ParsedExamples(string_input, [f"{parser.name}:{index}" for index in range(len(keys))], features)


def _strings(constants: dict[str, Any], tensor: str) -> list[str]:
    import tensorflow as tf

    node = constants.get(tensor.lstrip("^").split(":")[0])
    if node is None:
        raise InvalidInput(f"the tf.Example parser's feature keys are computed ({tensor!r}), not constants")
    return [value.decode() for value in np.asarray(tf.make_ndarray(node.attr["value"].tensor)).reshape(-1)]


def serialized(features: list[InputSpec], arrays: list[np.ndarray]) -> np.ndarray:
    """One serialized tf.Example per row of `arrays` (one array per feature, in `features`' order)."""
    import tensorflow as tf

    examples = []
    for row in range(len(arrays[0])):
        values = {}
        for spec, array in zip(features, arrays, strict=True):
            flat = np.asarray(array[row]).reshape(-1)
            if spec.dtype.kind == "f":
                values[spec.name] = tf.train.Feature(float_list=tf.train.FloatList(value=flat.tolist()))
            elif spec.dtype.kind in "iub":
                values[spec.name] = tf.train.Feature(int64_list=tf.train.Int64List(value=flat.tolist()))
            else:
                values[spec.name] = tf.train.Feature(bytes_list=tf.train.BytesList(
                    value=[item if isinstance(item, bytes) else str(item).encode() for item in flat]))
        examples.append(tf.train.Example(features=tf.train.Features(feature=values)).SerializeToString())
    return np.array(examples, dtype=object)


def parsed(features: list[InputSpec], examples: np.ndarray) -> dict[str, np.ndarray]:
    """Serialized tf.Examples (a 1-D array of bytes) read into the features, as the signature's parser reads them
    (TF Serving's warmup requests of such a model)."""
    import tensorflow as tf

    spec = {feature.name: tf.io.FixedLenFeature(list(feature.dims[1:]), tf.string if feature.dtype == object
                                                else tf.as_dtype(feature.dtype))
            for feature in features}
    try:
        values = tf.io.parse_example(tf.constant(list(examples.reshape(-1)), dtype=tf.string), spec)
    except (tf.errors.InvalidArgumentError, ValueError) as exc:
        raise InvalidInput(f"a warmup request's examples do not parse: {str(exc).splitlines()[0]}") from None
    return {name: np.asarray(value.numpy(), dtype=object) if value.dtype == tf.string else value.numpy()
            for name, value in values.items()}
