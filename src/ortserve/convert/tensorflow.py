"""TensorFlow to ONNX with tf2onnx: a SavedModel directory (serving_default) or a Keras .keras/.h5 file.

Every source is converted as a tf.function: tf2onnx's Keras path fails on Keras 3 Sequential models
(`KeyError: 'keras_tensor_...'`), the function path handles functional and Sequential models alike.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ortserve.convert import keras_files, tf_ops
from ortserve.convert.decoded_images import DecodedImages, find_decoder
from ortserve.convert.graph_cut import captured_by_placeholder, past_identities
from ortserve.convert.lookup_tables import Lookups, resolve
from ortserve.convert.naming import rename
from ortserve.convert.parsed_examples import ParsedExamples, find_parser, serialized
from ortserve.convert.spec import InputSpec
from ortserve.convert.text_vectorization import VectorizedText, find_vectorizer
from ortserve.errors import InvalidInput
from ortserve.repository.layout import SAVED_MODEL_FILE

KERAS_SUFFIXES = {".keras", ".h5"}
DEFAULT_SIGNATURE = "serving_default"
log = logging.getLogger(__name__)


@dataclass
class TfModel:
    function: Callable[..., Any]  # positional tensors in, a list of tensors out
    inputs: list[InputSpec]
    outputs: list[str]
    owner: Any  # the loaded object holding the variables: they live only as long as it does
    # a signature of a string input that the graph parses as tf.Examples, decodes as images or splits as text:
    # converted from the parsed features, the decoded images or the token ids on, in its frozen graph
    parsed: ParsedExamples | None = None
    images: DecodedImages | None = None
    text: VectorizedText | None = None
    frozen: FrozenGraph | None = None  # set by load
    keras_file: keras_files.KerasFile | None = None  # a .keras/.h5 source: which Keras wrote and loaded it


@dataclass(frozen=True)
class FrozenGraph:
    """A model's frozen GraphDef, converted from `starts` (one tensor per model input: its placeholders, or where
    a cut begins) to its outputs, and the lookup tables it reads."""

    graph_def: Any
    starts: list[str]
    outputs: list[str]
    lookups: Lookups
    cut: bool  # starts inside the graph: each takes its input's shape


def _spec_from_tf(name: str, tensor_spec: Any) -> InputSpec:
    dims = tuple("batch" if i == 0 and d is None else (f"dim{i}" if d is None else int(d))
                 for i, d in enumerate(tensor_spec.shape))
    return InputSpec(name, np.dtype(tensor_spec.dtype.as_numpy_dtype), dims)


def load(path: Path, declared: list[InputSpec], signature_name: str | None = None,
         unsafe_deserialization: bool = False) -> TfModel:
    import tensorflow as tf

    try:
        if path.is_dir():
            loaded = tf.saved_model.load(str(path))
            signature = loaded.signatures[_signature_key(path, loaded.signatures, signature_name)]
            named = signature.structured_input_signature[1]
            names = sorted(named)
            outputs = sorted(signature.structured_outputs)
            inputs = declared or [_spec_from_tf(name, named[name]) for name in names]
            if not declared and any(named[name].dtype == tf.string for name in names):
                cut = _cut_model(loaded, signature, inputs, outputs)
                if cut is not None:
                    return cut

            def call(*tensors: Any) -> list[Any]:
                result = signature(**dict(zip([s.name for s in inputs], tensors, strict=True)))
                return [result[name] for name in outputs]

            return _whole(TfModel(call, inputs, outputs, loaded))
        keras_file = keras_files.load(path, unsafe_deserialization)
    except InvalidInput:
        raise
    except Exception as exc:
        first = str(exc).splitlines()[0]
        unregistered = re.search(r"Op type not registered '([^']+)'", first)
        if unregistered:  # TensorFlow's own message points to tf.contrib, gone since TensorFlow 2
            first = (f"its graph runs {unregistered.group(1)}, an op of a TensorFlow extension this process has not "
                     "loaded (install the extension, e.g. tensorflow-text, and name its module with ortserve convert "
                     "--import MODULE; ONNX may still have no counterpart for the op)")
        hint = "" if path.is_dir() or unregistered else (
            " (a model with custom layers or functions loads once the module that registers them is imported: "
            "ortserve convert --import MODULE)")
        raise InvalidInput(f"{str(path)!r} cannot be loaded by TensorFlow: {first}{hint}") from None
    # a model of dict inputs or outputs takes and answers them by key; its inputs and outputs lists are flattened
    # from those dicts, in the keys' sorted order
    model, input_keys, output_keys = keras_file.model, keras_file.input_keys, keras_file.output_keys
    # Sequential models name their inputs keras_tensor_N, which means nothing to a client
    names = input_keys or [t.name if not t.name.startswith("keras_tensor") else f"input_{i}" if i else "input"
                           for i, t in enumerate(model.inputs)]
    inputs = declared or [_spec_from_tf(name, tf.TensorSpec(t.shape, t.dtype)) for name, t in zip(
        names, model.inputs, strict=True)]
    outputs = output_keys or list(getattr(model, "output_names", None)
                                  or [f"output_{i}" for i in range(len(model.outputs))])

    def call_keras(*tensors: Any) -> list[Any]:
        given = dict(zip(input_keys, tensors, strict=True)) if input_keys else (
            list(tensors) if len(tensors) > 1 else tensors[0])
        result = model(given, training=False)
        if isinstance(result, dict):
            return [result[name] for name in outputs]
        return list(result) if isinstance(result, list | tuple) else [result]

    if not declared and any(spec.dtype == object for spec in inputs):  # text or images prepared in the model
        function = tf.function(call_keras, input_signature=_tensor_specs(inputs))
        cut = _cut_model(model, function.get_concrete_function(), inputs, outputs)
        if cut is not None:
            return replace(cut, keras_file=keras_file)
    return _whole(TfModel(call_keras, inputs, outputs, model, keras_file=keras_file))


def _whole(tf_model: TfModel) -> TfModel:
    """The model with its frozen graph, its lookup tables resolved (convert.lookup_tables); refused when it keeps
    other state."""
    import tensorflow as tf

    function = tf.function(tf_model.function, input_signature=_tensor_specs(tf_model.inputs))
    concrete = function.get_concrete_function()
    graph_def, input_names, output_names = _frozen(concrete)
    model_inputs = input_names[:len(tf_model.inputs)]
    lookups, left = resolve(graph_def, captured_by_placeholder(concrete), input_names[len(tf_model.inputs):],
                            model_inputs)
    _refuse_unfrozen_state(graph_def, left)
    tf_model.frozen = FrozenGraph(graph_def, model_inputs, output_names, lookups, cut=False)
    tf_model.inputs = _with_known_values(tf_model.inputs, model_inputs, lookups)
    return tf_model


def _with_known_values(specs: list[InputSpec], starts: list[str], lookups: Lookups) -> list[InputSpec]:
    """The input specs, each of an input looked up in a table with the table's keys as its known values."""
    def known(keys: np.ndarray) -> tuple[str | int | float, ...]:
        return tuple(key.decode() if isinstance(key, bytes) else key.item() for key in keys.reshape(-1))

    return [replace(spec, known=known(lookups.vocabularies[start])) if start in lookups.vocabularies else spec
            for spec, start in zip(specs, starts, strict=True)]


def _tensor_specs(inputs: list[InputSpec]) -> list[Any]:
    import tensorflow as tf

    return [tf.TensorSpec([None if isinstance(d, str) else d for d in spec.dims], tf.as_dtype(spec.dtype),
                          name=spec.name) for spec in inputs]


def _signature_key(path: Path, signatures: Any, asked: str | None) -> str:
    """The signature to convert: the one asked for; else serving_default, or the only one the SavedModel has."""
    keys = sorted(signatures.keys())
    wanted = asked or DEFAULT_SIGNATURE
    if wanted in keys:
        return wanted
    if asked is None and len(keys) == 1:
        log.info("%s has no %r signature: converting its only one, %r", path, DEFAULT_SIGNATURE, keys[0])
        return keys[0]
    raise InvalidInput(f"the SavedModel {str(path)!r} has no signature {wanted!r}; its signatures are "
                       f"{', '.join(map(repr, keys)) or 'none'}" + ("" if asked else ": give one with --signature"))


def _cut_model(loaded: Any, signature: Any, inputs: list[InputSpec], outputs: list[str]) -> TfModel | None:
    """The signature as a model of the features it parses from its examples (convert.parsed_examples), of the
    token ids it splits its text into (convert.text_vectorization) or of the images it decodes
    (convert.decoded_images); None when it does none of these."""
    import tensorflow as tf

    graph_def, input_tensors, output_tensors = _frozen(signature)

    def cut_at(cut_graph_def: Any, starts: list[str]) -> FrozenGraph:
        """The cut, with the lookup tables the graph reads after it (an Estimator's vocabulary columns), resolved
        in a copy: the graph the cut's own run imports keeps its tables as they are."""
        converted = tf.compat.v1.GraphDef()
        converted.CopyFrom(cut_graph_def)
        lookups, _ = resolve(converted, captured_by_placeholder(signature), input_tensors[len(inputs):], starts)
        return FrozenGraph(converted, starts, output_tensors, lookups, cut=True)

    parsed = find_parser(graph_def, inputs[0].name) if len(inputs) == 1 else None
    if parsed is not None:
        def call(*tensors: Any) -> list[Any]:
            examples = serialized(parsed.features, [np.asarray(tensor) for tensor in tensors])
            result = signature(**{parsed.string_input: tf.constant(examples, dtype=tf.string)})
            return [result[name] for name in outputs]

        frozen = cut_at(graph_def, parsed.tensors)
        return TfModel(call, _with_known_values(parsed.features, parsed.tensors, frozen.lookups), outputs, loaded,
                       parsed=parsed, frozen=frozen)
    text = find_vectorizer(graph_def, signature, inputs, input_tensors, output_tensors)
    if text is not None:
        return TfModel(_positional(text.run), [text.spec], outputs, loaded,
                       text=text, frozen=cut_at(text.graph_def, [text.tensor]))
    images = find_decoder(graph_def, inputs, input_tensors, output_tensors, outputs)
    if images is None:
        return None
    return TfModel(_positional(images.run), images.inputs, outputs, loaded,
                   images=images, frozen=cut_at(images.graph_def, images.starts))


def _positional(run: Callable[[list[np.ndarray]], list[np.ndarray]]) -> Callable[..., list[np.ndarray]]:
    """A cut graph's run (a list of feeds) as TfModel calls its function: one tensor an argument."""
    return lambda *tensors: run([np.asarray(tensor) for tensor in tensors])


def convert(tf_model: TfModel, opset: int, path: Path) -> None:
    import tf2onnx

    frozen = tf_model.frozen
    if frozen is None:
        raise ValueError("the TensorFlow model was not frozen when it was loaded")
    graph_def, input_names, output_names = frozen.graph_def, frozen.starts, frozen.outputs
    handlers = {**tf_ops.HANDLERS, **frozen.lookups.op_handlers()}
    weights = _lift_weights(graph_def) if graph_def.ByteSize() > LIFT_WEIGHTS_ABOVE_BYTES else {}
    lifted_inputs = [f"{name}:0" for name in weights]
    # a start inside the graph has the shape of its input, batch dimension dynamic
    shapes = {} if not frozen.cut else {
        name: [None if isinstance(dim, str) else dim for dim in spec.dims]
        for name, spec in zip(frozen.starts, tf_model.inputs, strict=True)}
    try:
        model, _ = tf2onnx.convert.from_graph_def(graph_def, input_names=input_names + lifted_inputs,
                                                  output_names=output_names, opset=opset, shape_override=shapes,
                                                  custom_op_handlers=handlers)
    except Exception as exc:
        raise InvalidInput(f"tf2onnx cannot convert the model: {str(exc).splitlines()[0]}") from None
    tf_ops.refuse_unconverted(model)
    _restore_weights(model, weights)
    tf_ops.one_hot_ignores_negative_ids(model)
    tf_ops.complete_output_shapes(model)
    rename(model, model.graph.input, [spec.name for spec in tf_model.inputs])
    rename(model, model.graph.output, tf_model.outputs)
    model.ir_version = min(model.ir_version, 10)
    path.write_bytes(model.SerializeToString())


def _refuse_unfrozen_state(graph_def: Any, extra_inputs: list[str]) -> None:
    """Refuse a graph left with inputs of its own once frozen and its lookups resolved: state TensorFlow cannot
    turn into constants (a table the graph changes as it runs), which ONNX would take as an input no client
    sends."""
    if not extra_inputs:
        return
    nodes = {node.name: node for node in graph_def.node}
    left = {name.split(":")[0] for name in extra_inputs}
    users = sorted({node.op for node in graph_def.node if node.op != "Identity"
                    and any(past_identities(nodes, given) in left for given in node.input)})
    ran = f" (its graph runs {', '.join(users)} on it)" if users else ""
    raise InvalidInput(f"the model holds state that cannot be frozen into constants{ran}: a table or other resource "
                       "that the graph changes as it runs, or that only TensorFlow can read; ONNX has no "
                       "counterpart for it. Lookup tables that the graph only reads (Keras' StringLookup and "
                       "IntegerLookup) are converted")


# tf2onnx holds its graph's constants many times over while it converts (VGG16's 527 MB of weights took it past
# 21 GB); a model this large goes through it without its large weights (_lift_weights)
LIFT_WEIGHTS_ABOVE_BYTES = 256 * 1024 * 1024
_LARGE_CONSTANT_BYTES = 1024 * 1024


def _lift_weights(graph_def: Any) -> dict[str, np.ndarray]:
    """Turn the GraphDef's large constants (weights) into placeholders, in place; their values by node name. The
    converted graph takes them as inputs, which _restore_weights makes initializers again: tf2onnx converts the
    graph's structure without ever copying the weights (the layout transposes it would have folded into them stay
    as Transpose nodes, which ONNX Runtime folds when it loads the model)."""
    import tensorflow as tf

    lifted = {}
    for node in graph_def.node:
        if node.op != "Const" or node.attr["value"].tensor.ByteSize() < _LARGE_CONSTANT_BYTES:
            continue
        value = tf.make_ndarray(node.attr["value"].tensor)
        lifted[node.name] = value
        dtype = node.attr["dtype"].type
        node.op = "Placeholder"
        node.attr.clear()
        node.attr["dtype"].type = dtype
        node.attr["shape"].shape.CopyFrom(tf.TensorShape(value.shape).as_proto())
    return lifted


def _restore_weights(model: Any, weights: dict[str, np.ndarray]) -> None:
    """The lifted weights back in the ONNX model: each placeholder input becomes an initializer of its value."""
    if not weights:
        return
    from onnx import numpy_helper

    by_input = {f"{name}:0": value for name, value in weights.items()}
    kept = [value for value in model.graph.input if value.name not in by_input]
    found = [value.name for value in model.graph.input if value.name in by_input]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    for name in found:
        model.graph.initializer.append(numpy_helper.from_array(by_input[name], name))


def _frozen(concrete: Any) -> tuple[Any, list[str], list[str]]:
    """The traced function as one GraphDef for tf2onnx: variables and captured tensors frozen into constants
    (Keras 3's Normalization layer captures its mean and variance as tensors, which tf2onnx's own freezing left
    as graph inputs a client would have had to send), and nested functions made inlinable. Keras 3 runs grouped
    and depthwise-as-grouped convolutions (ConvNeXt) in a nested XLA-compiled function, which grappler does not
    inline and tf2onnx then cannot convert (a StatefulPartitionedCall node): the XLA marks are dropped, since
    the ONNX graph is not compiled by XLA anyway. Control flow stays as While loops (not lowered to TF1's
    Switch/Merge), which tf2onnx turns into ONNX Loop, LSTM and GRU ops: lowered, Keras 3's recurrent layers left
    TensorList ops that no ONNX opset has."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    frozen = convert_variables_to_constants_v2(concrete, lower_control_flow=False, aggressive_inlining=True)
    graph_def = frozen.graph.as_graph_def()
    for function in graph_def.library.function:
        for key in [key for key in function.attr if key in _NOT_INLINED]:
            del function.attr[key]
    for node in graph_def.node:
        for key in [key for key in node.attr if key in _NOT_INLINED]:
            del node.attr[key]
    return graph_def, [tensor.name for tensor in frozen.inputs], [tensor.name for tensor in frozen.outputs]


_NOT_INLINED = frozenset({"_XlaMustCompile", "_noinline", "_XlaCompile", "_XlaScope", "_XlaInternalScope"})


def run(tf_model: TfModel, feeds: list[np.ndarray]) -> list[np.ndarray]:
    import tensorflow as tf

    return [np.asarray(out) for out in tf_model.function(*(tf.constant(feed) for feed in feeds))]


def is_source(path: Path) -> bool:
    return path.suffix in KERAS_SUFFIXES or (path.is_dir() and (path / SAVED_MODEL_FILE).is_file())
