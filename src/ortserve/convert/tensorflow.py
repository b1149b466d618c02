"""TensorFlow to ONNX with tf2onnx: a SavedModel directory (serving_default) or a Keras .keras/.h5 file.

Every source is converted as a tf.function: tf2onnx's Keras path fails on Keras 3 Sequential models
(`KeyError: 'keras_tensor_...'`), the function path handles functional and Sequential models alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from ortserve.convert.naming import rename
from ortserve.convert.spec import InputSpec
from ortserve.errors import InvalidInput

SAVED_MODEL_FILE = "saved_model.pb"
KERAS_SUFFIXES = {".keras", ".h5"}


@dataclass
class TfModel:
    function: Callable[..., Any]  # positional tensors in, a list of tensors out
    inputs: list[InputSpec]
    outputs: list[str]
    owner: Any  # the loaded object holding the variables: they live only as long as it does


def _spec_from_tf(name: str, tensor_spec: Any) -> InputSpec:
    dims = tuple("batch" if i == 0 and d is None else (f"dim{i}" if d is None else int(d))
                 for i, d in enumerate(tensor_spec.shape))
    return InputSpec(name, np.dtype(tensor_spec.dtype.as_numpy_dtype), dims)


def load(path: Path, declared: list[InputSpec]) -> TfModel:
    import tensorflow as tf

    try:
        if path.is_dir():
            loaded = tf.saved_model.load(str(path))
            signature = loaded.signatures["serving_default"]
            named = signature.structured_input_signature[1]
            names = sorted(named)
            outputs = sorted(signature.structured_outputs)
            inputs = declared or [_spec_from_tf(name, named[name]) for name in names]

            def call(*tensors: Any) -> list[Any]:
                result = signature(**dict(zip([s.name for s in inputs], tensors, strict=True)))
                return [result[name] for name in outputs]

            return TfModel(call, inputs, outputs, loaded)
        model = tf.keras.models.load_model(str(path), compile=False)
    except Exception as exc:
        raise InvalidInput(f"{str(path)!r} cannot be loaded by TensorFlow: {str(exc).splitlines()[0]}") from None
    # Sequential models name their inputs keras_tensor_N, which means nothing to a client
    names = [t.name if not t.name.startswith("keras_tensor") else f"input_{i}" if i else "input"
             for i, t in enumerate(model.inputs)]
    inputs = declared or [_spec_from_tf(name, tf.TensorSpec(t.shape, t.dtype)) for name, t in zip(
        names, model.inputs, strict=True)]
    outputs = list(getattr(model, "output_names", None) or [f"output_{i}" for i in range(len(model.outputs))])

    def call_keras(*tensors: Any) -> list[Any]:
        result = model(list(tensors) if len(tensors) > 1 else tensors[0], training=False)
        return list(result) if isinstance(result, list | tuple) else [result]

    return TfModel(call_keras, inputs, outputs, model)


def convert(tf_model: TfModel, opset: int, path: Path) -> None:
    import tensorflow as tf
    import tf2onnx

    signature = [tf.TensorSpec([None if isinstance(d, str) else d for d in spec.dims], tf.as_dtype(spec.dtype),
                               name=spec.name) for spec in tf_model.inputs]
    function = tf.function(tf_model.function, input_signature=signature)
    try:
        model, _ = tf2onnx.convert.from_function(function, input_signature=signature, opset=opset,
                                                 custom_op_handlers=CUSTOM_OP_HANDLERS)
    except Exception as exc:
        raise InvalidInput(f"tf2onnx cannot convert the model: {str(exc).splitlines()[0]}") from None
    _fold_captured_constants(model, function.get_concrete_function())
    rename(model, model.graph.input, [spec.name for spec in tf_model.inputs])
    rename(model, model.graph.output, tf_model.outputs)
    model.ir_version = min(model.ir_version, 10)
    path.write_bytes(model.SerializeToString())


def _erfc(ctx: Any, node: Any, name: str, args: Any) -> None:
    """Erfc(x) = 1 - Erf(x): TensorFlow's exact GELU (Keras' `gelu` activation) uses Erfc, which ONNX lacks."""
    from tf2onnx import utils

    node.type = "Erf"
    dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.output[0]))
    one = ctx.make_const(utils.make_name(f"{node.name}_one"), np.array(1, dtype=dtype))
    ctx.insert_new_node_on_output("Sub", node.output[0], name=utils.make_name(f"{node.name}_complement"),
                                  inputs=[one.output[0], node.output[0]])


# TensorFlow ops tf2onnx does not convert, rewritten into ONNX ones as tf2onnx meets them
CUSTOM_OP_HANDLERS = {"Erfc": (_erfc, [])}


def _fold_captured_constants(model: onnx.ModelProto, concrete: Any) -> None:
    """tf2onnx freezes captured variables but leaves captured constant tensors (Keras 3's Normalization layer
    holds its mean and variance as such, in EfficientNet and ConvNeXt) as graph inputs a client would have to
    send: they become initializers holding the captured values."""
    captured = {inner.name: outer for outer, inner in zip(concrete.captured_inputs, concrete.graph.internal_captures,
                                                           strict=True) if outer.dtype.name != "resource"}
    folded = [value for value in model.graph.input if value.name in captured]
    used = {name for node in model.graph.node for name in node.input}
    for value in folded:
        if value.name in used:  # tf2onnx may have folded what used it already
            model.graph.initializer.append(numpy_helper.from_array(np.asarray(captured[value.name]), value.name))
        model.graph.input.remove(value)


def run(tf_model: TfModel, feeds: list[np.ndarray]) -> list[np.ndarray]:
    import tensorflow as tf

    return [np.asarray(out) for out in tf_model.function(*(tf.constant(feed) for feed in feeds))]


def is_source(path: Path) -> bool:
    return path.suffix in KERAS_SUFFIXES or (path.is_dir() and (path / SAVED_MODEL_FILE).is_file())
