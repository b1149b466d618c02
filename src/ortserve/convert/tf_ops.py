"""TensorFlow ops that tf2onnx does not convert, or converts into something that answers otherwise: rewritten into
ONNX ops as tf2onnx meets them (its custom op handlers: `handler(graph, node, name, args)`), and passes over the
converted model (ops left unconverted refused by name, OneHot's negative ids, outputs' shapes). Keras' preprocessing
layers are where most of them come from (CategoryEncoding, Discretization, StringLookup's mask token)."""

from __future__ import annotations

from typing import Any

import numpy as np


def _erfc(ctx: Any, node: Any, name: str, args: Any) -> None:
    """Erfc(x) = 1 - Erf(x): TensorFlow's exact GELU (Keras' `gelu` activation) uses Erfc, which ONNX lacks."""
    from tf2onnx import utils

    node.type = "Erf"
    dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.output[0]))
    one = ctx.make_const(utils.make_name(f"{node.name}_one"), np.array(1, dtype=dtype))
    ctx.insert_new_node_on_output("Sub", node.output[0], name=utils.make_name(f"{node.name}_complement"),
                                  inputs=[one.output[0], node.output[0]])


def _dense_bincount(ctx: Any, node: Any, name: str, args: Any) -> None:
    """DenseBincount(ids, size, weights), the counts (or, binary_output, the presence) of each id below `size` in
    each row: Keras' multi_hot and count encodings. tf2onnx counts over the whole tensor, every row's ids
    together; here each id becomes a one-hot row (ids past `size` none, as TensorFlow ignores them; negative ones
    none either, by one_hot_ignores_negative_ids as every OneHot), summed over the ids of its row, times their
    weights when there are any. Counted in float32 (ONNX Runtime's OneHot makes no int32 rows), then cast to the
    op's type."""
    from onnx import TensorProto
    from tf2onnx import utils
    from tf2onnx.graph_builder import GraphBuilder

    ids, size, weights = node.input
    binary = bool(node.get_attr_value("binary_output"))
    output, dtype, shape = node.output[0], ctx.get_dtype(node.output[0]), ctx.get_shape(node.output[0])
    given_weights = node.inputs[2]
    weighted = not binary and not (given_weights.is_const() and given_weights.get_tensor_value(as_list=False).size == 0)
    ctx.remove_node(node.name)
    depth = ctx.make_node("Cast", [size], attr={"to": TensorProto.INT64}, name=utils.make_name(f"{name}_size"))
    ids64 = ctx.make_node("Cast", [ids], attr={"to": TensorProto.INT64}, name=utils.make_name(f"{name}_ids"))
    on_off = ctx.make_const(utils.make_name(f"{name}_values"), np.array([0, 1], dtype=np.float32))
    counted = ctx.make_node("OneHot", [ids64.output[0], depth.output[0], on_off.output[0]], attr={"axis": -1},
                            name=utils.make_name(f"{name}_one_hot")).output[0]
    if weighted:
        weights32 = ctx.make_node("Cast", [weights], attr={"to": TensorProto.FLOAT},
                                  name=utils.make_name(f"{name}_weights")).output[0]
        unsqueezed = GraphBuilder(ctx).make_unsqueeze({"data": weights32, "axes": [-1]})
        counted = ctx.make_node("Mul", [counted, unsqueezed], name=utils.make_name(f"{name}_weighted")).output[0]
    counted = GraphBuilder(ctx).make_reduce_sum({"data": counted, "axes": [-2], "keepdims": 0},
                                                name=utils.make_name(f"{name}_sum"))
    if binary:
        one = ctx.make_const(utils.make_name(f"{name}_one"), np.array(1, dtype=np.float32))
        counted = ctx.make_node("Min", [counted, one.output[0]], name=utils.make_name(f"{name}_present")).output[0]
    ctx.make_node("Cast", [counted], attr={"to": dtype}, outputs=[output], name=name, shapes=[shape],
                  dtypes=[dtype])


def _bucketize(ctx: Any, node: Any, name: str, args: Any) -> None:
    """Bucketize(x; boundaries): the number of boundaries at or below each value (Keras' Discretization)."""
    from onnx import TensorProto
    from tf2onnx import utils
    from tf2onnx.graph_builder import GraphBuilder

    values, output = node.input[0], node.output[0]
    shape, dtype = ctx.get_shape(output), ctx.get_dtype(output)
    boundaries = np.array(node.get_attr_value("boundaries"), dtype=utils.map_onnx_to_numpy_type(ctx.get_dtype(values)))
    ctx.remove_node(node.name)
    expanded = GraphBuilder(ctx).make_unsqueeze({"data": values, "axes": [-1]})
    edges = ctx.make_const(utils.make_name(f"{name}_boundaries"), boundaries)
    below = ctx.make_node("Less", [expanded, edges.output[0]], name=utils.make_name(f"{name}_below")).output[0]
    at_or_above = ctx.make_node("Not", [below], name=utils.make_name(f"{name}_at_or_above")).output[0]
    counted = ctx.make_node("Cast", [at_or_above], attr={"to": TensorProto.INT32},
                            name=utils.make_name(f"{name}_counted")).output[0]
    GraphBuilder(ctx).make_reduce_sum({"data": counted, "axes": [-1], "keepdims": 0, "outputs": [output]},
                                      name=name, shapes=[shape], dtypes=[dtype])


def _equal(ctx: Any, node: Any, name: str, args: Any) -> None:
    """Equal and NotEqual. Of numbers, as tf2onnx converts them; of strings (a StringLookup's mask token), which
    tf2onnx casts to integers (failing, or equal where the text is not) and ONNX compares only from opset 19
    (beyond tf2onnx's): a string equals a constant where a LabelEncoder holding only that constant finds it."""
    from onnx import TensorProto
    from tf2onnx import utils
    from tf2onnx.onnx_opset.logical import Equal

    negated = node.type == "NotEqual"
    if ctx.get_dtype(node.input[0]) != TensorProto.STRING:
        (Equal.version_11 if ctx.opset >= 11 else Equal.version_7)(ctx, node)
        return
    output, shape = node.output[0], ctx.get_shape(node.output[0])
    constant = next((index for index, given in enumerate(node.inputs)
                     if given.is_const() and given.get_tensor_value(as_list=False).size == 1), None)
    if constant is None:
        raise ValueError(f"{name} compares two string tensors, which ONNX can only do from opset 19")
    word = node.inputs[constant].get_tensor_value(as_list=False).reshape(-1)[0]
    other = node.input[1 - constant]
    ctx.remove_node(node.name)
    found = ctx.make_node("LabelEncoder", [other], domain="ai.onnx.ml", name=utils.make_name(f"{name}_found"),
                          attr={"keys_strings": [word if isinstance(word, bytes) else str(word).encode()],
                                "values_int64s": [1], "default_int64": 0}).output[0]
    if not negated:
        ctx.make_node("Cast", [found], attr={"to": TensorProto.BOOL}, outputs=[output], name=name,
                      shapes=[shape], dtypes=[TensorProto.BOOL])
        return
    matched = ctx.make_node("Cast", [found], attr={"to": TensorProto.BOOL},
                            name=utils.make_name(f"{name}_matched")).output[0]
    ctx.make_node("Not", [matched], outputs=[output], name=name, shapes=[shape], dtypes=[TensorProto.BOOL])


def _bitcast(ctx: Any, node: Any, name: str, args: Any) -> None:
    """Bitcast of floats to integers whose bits are only read for the sign: Keras 3's argmax and argmin mark
    negative zeros with its signbit, `bitcast(x, int32) & INT32_MIN < 0`. ONNX cannot reinterpret bits, but the
    sign bit of x is `x < 0 or 1/x < 0` (1/-0.0 is -inf), so the integer becomes the sign bit alone (INT_MIN or 0),
    which reads the same wherever only the sign bit is read. Any other use is left unconverted, and refused by
    name."""
    from tf2onnx import utils

    output = node.output[0]
    source = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
    target = utils.map_onnx_to_numpy_type(ctx.get_dtype(output))
    consumers = ctx.find_output_consumers(output)
    if not (np.issubdtype(source, np.floating) and np.issubdtype(target, np.signedinteger) and consumers
            and all(_reads_sign_only(consumer, output, target) for consumer in consumers)):
        raise ValueError(f"{name} reinterprets bits other than a float's sign, which ONNX cannot")
    values, shape = node.input[0], ctx.get_shape(output)
    ctx.remove_node(node.name)
    zero = ctx.make_const(utils.make_name(f"{name}_zero"), np.array(0, dtype=source)).output[0]
    negative = ctx.make_node("Less", [values, zero], name=utils.make_name(f"{name}_negative")).output[0]
    reciprocal = ctx.make_node("Reciprocal", [values], name=utils.make_name(f"{name}_reciprocal")).output[0]
    negative_zero = ctx.make_node("Less", [reciprocal, zero], name=utils.make_name(f"{name}_negative_zero")).output[0]
    sign_bit = ctx.make_node("Or", [negative, negative_zero], name=utils.make_name(f"{name}_sign")).output[0]
    set_bit = ctx.make_const(utils.make_name(f"{name}_set"), np.array(np.iinfo(target).min, dtype=target)).output[0]
    clear = ctx.make_const(utils.make_name(f"{name}_clear"), np.array(0, dtype=target)).output[0]
    ctx.make_node("Where", [sign_bit, set_bit, clear], outputs=[output], name=name, shapes=[shape],
                  dtypes=[ctx.get_dtype(output)])


def _reads_sign_only(consumer: Any, tensor: str, dtype: Any) -> bool:
    """Whether the node reads nothing of `tensor` but its sign bit: compares it with zero (x < 0, x >= 0), or
    masks it with the sign bit (x & INT_MIN)."""
    others = [given for given, name in zip(consumer.inputs, consumer.input, strict=True) if name != tensor]
    if len(others) != 1 or not others[0].is_const():
        return False
    constant = others[0].get_tensor_value(as_list=False)
    if consumer.type in ("Less", "GreaterEqual"):
        return consumer.input[0] == tensor and not np.any(constant)
    return consumer.type == "BitwiseAnd" and bool(np.all(constant == np.iinfo(dtype).min))


def _hash_into_one_bucket(ctx: Any, node: Any, name: str, args: Any) -> None:
    """StringToHashBucketFast/Strong into a single bucket: 0 for every string, whatever its hash. A vocabulary
    table with one out-of-vocabulary bucket (tf.lookup.StaticVocabularyTable, an Estimator's vocabulary column)
    hashes its unknown keys so; into more buckets the op is left unconverted (FarmHash has no ONNX op), and
    refused by name."""
    from onnx import TensorProto, helper
    from tf2onnx import utils

    if node.get_attr_value("num_buckets") != 1:
        raise ValueError(f"{name} hashes strings into {node.get_attr_value('num_buckets')} buckets, which ONNX cannot")
    strings, output, shape = node.input[0], node.output[0], ctx.get_shape(node.output[0])
    ctx.remove_node(node.name)
    strings_shape = ctx.make_node("Shape", [strings], name=utils.make_name(f"{name}_shape")).output[0]
    ctx.make_node("ConstantOfShape", [strings_shape], outputs=[output], name=name, shapes=[shape],
                  dtypes=[TensorProto.INT64], attr={"value": helper.make_tensor("zero", TensorProto.INT64, [1], [0])})


def _rfft(ctx: Any, node: Any, name: str, args: Any) -> None:
    """RFFT(x, fft_length) over the innermost axis as ONNX's DFT of a real signal, one-sided: [..., bins, 2], the
    real and imaginary parts last. tf2onnx's own RFFT puts them first, and its ComplexAbs then refused the
    batches of frames tf.signal.stft makes ("expected the first dimension to be 2"), so every model computing a
    spectrogram (an audio classifier exported with its waveform preprocessing) stopped there. The result may be
    read as magnitudes (ComplexAbs) or parts (Real, Imag: Keras' MelSpectrogram squares them); any other consumer
    leaves the op unconverted, and refused by name."""
    from onnx import TensorProto
    from tf2onnx import utils
    from tf2onnx.graph_builder import GraphBuilder

    output = node.output[0]
    consumers = ctx.find_output_consumers(output)
    if not consumers or any(consumer.type not in _COMPLEX_READERS for consumer in consumers):
        raise ValueError(f"{name}'s complex result is read other than as magnitudes or parts, which this "
                         "conversion cannot")
    signal, length = node.input
    shape = ctx.get_shape(output)
    ctx.remove_node(node.name)
    builder = GraphBuilder(ctx)
    expanded = builder.make_unsqueeze({"data": signal, "axes": [-1]})
    length64 = ctx.make_node("Cast", [length], attr={"to": TensorProto.INT64},
                             name=utils.make_name(f"{name}_length")).output[0]
    scalar = builder.make_squeeze({"data": length64, "axes": [0]})
    inputs, attr = [expanded, scalar], {"onesided": 1}
    if ctx.opset >= 20:  # the axis became an input
        inputs.append(ctx.make_const(utils.make_name(f"{name}_axis"), np.array(-2, dtype=np.int64)).output[0])
    else:
        attr["axis"] = -2
    ctx.make_node("DFT", inputs, attr=attr, outputs=[output], name=name,
                  shapes=[None if shape is None else [*shape, 2]], dtypes=[TensorProto.FLOAT])


def _complex_abs(ctx: Any, node: Any, name: str, args: Any) -> None:
    """The magnitude of an RFFT's bins (_rfft): the root of the sum of squares of the real and imaginary parts,
    the last axis. A ComplexAbs of anything else goes to tf2onnx's own handler."""
    from tf2onnx.graph_builder import GraphBuilder
    from tf2onnx.onnx_opset.signal import ComplexAbsOp

    producer = ctx.get_node_by_output(node.input[0])
    if producer is None or producer.type not in ("RFFT", "DFT"):
        ComplexAbsOp.any_version(ctx.opset, ctx, node)
        return
    parts, output, shape, dtype = node.input[0], node.output[0], ctx.get_shape(node.output[0]), ctx.get_dtype(
        node.output[0])
    ctx.remove_node(node.name)
    squares = GraphBuilder(ctx).make_reduce_sum_square({"data": parts, "axes": [-1], "keepdims": 0})
    ctx.make_node("Sqrt", [squares], outputs=[output], name=name, shapes=[shape], dtypes=[dtype])


def _complex_part(ctx: Any, node: Any, name: str, args: Any) -> None:
    """Real or Imag of an RFFT's bins (_rfft): the first or second entry of the last axis. Of anything else the op
    is left unconverted (ONNX has no complex tensors), and refused by name."""
    from tf2onnx import utils

    producer = ctx.get_node_by_output(node.input[0])
    if producer is None or producer.type not in ("RFFT", "DFT"):
        raise ValueError(f"{name} reads a part of a complex tensor that is not a real signal's RFFT")
    parts, output, shape, dtype = node.input[0], node.output[0], ctx.get_shape(node.output[0]), ctx.get_dtype(
        node.output[0])
    ctx.remove_node(node.name)
    index = ctx.make_const(utils.make_name(f"{name}_index"), np.array(0 if node.type == "Real" else 1,
                                                                       dtype=np.int64)).output[0]
    ctx.make_node("Gather", [parts, index], attr={"axis": -1}, outputs=[output], name=name, shapes=[shape],
                  dtypes=[dtype])


_COMPLEX_READERS = frozenset({"ComplexAbs", "Real", "Imag"})
# tf2onnx custom op handlers, by TensorFlow op
HANDLERS = {"Erfc": (_erfc, []), "DenseBincount": (_dense_bincount, []), "Bucketize": (_bucketize, []),
            "Equal": (_equal, []), "NotEqual": (_equal, []), "Bitcast": (_bitcast, []),
            "StringToHashBucketFast": (_hash_into_one_bucket, []),
            "StringToHashBucketStrong": (_hash_into_one_bucket, []), "RFFT": (_rfft, []),
            "ComplexAbs": (_complex_abs, []), "Real": (_complex_part, []), "Imag": (_complex_part, [])}


def refuse_unconverted(model: Any) -> None:
    """Refuse a converted graph that still holds TensorFlow ops tf2onnx left as they were (it logs them and goes
    on), naming them: the ONNX checker would only say that no such ONNX op exists."""
    from onnx import defs

    from ortserve.errors import InvalidInput

    left = sorted({node.op_type for node in model.graph.node
                   if node.domain in ("", "ai.onnx") and not defs.has(node.op_type)})
    if not left:
        return
    hashing = [op for op in left if op.startswith(("StringToHashBucket", "SparseCross"))]
    hint = (f" ({', '.join(hashing)}: a Keras Hashing or HashedCrossing layer (a FeatureSpace's crosses), a "
            "StringLookup or IntegerLookup with more than one out-of-vocabulary index, or a vocabulary table with "
            "more than one out-of-vocabulary bucket, hashes strings with TensorFlow's FarmHash, which ONNX has no op "
            "for; use one out-of-vocabulary index or bucket, or convert the model behind the layer and send its "
            "ids)") if hashing else ""
    raise InvalidInput(f"ONNX has no counterpart for the TensorFlow op(s) {', '.join(left)} that the model runs, and "
                       f"tf2onnx does not convert them{hint}")


def complete_output_shapes(model: Any) -> None:
    """Give the outputs whose shape TensorFlow could not infer (those computed from a lookup table, whose shapes it
    does not know) the shapes ONNX infers; the checker refuses an output without one. In place."""
    from onnx import shape_inference

    if all(output.type.tensor_type.HasField("shape") for output in model.graph.output):
        return
    inferred = {output.name: output for output in shape_inference.infer_shapes(model).graph.output}
    for output in model.graph.output:
        if not output.type.tensor_type.HasField("shape") and output.name in inferred:
            output.type.CopyFrom(inferred[output.name].type)


def one_hot_ignores_negative_ids(model: Any) -> None:
    """Make the converted model's OneHot nodes give a negative id no position, as TensorFlow's one_hot does (ONNX's
    counts it from the end: -1, a common code for "missing", would become the last class). In place; from opset
    15 (CastLike), which every default conversion has."""
    from onnx import NodeProto, helper

    opset = next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), 0)
    if opset < 15:
        return
    nodes = []
    for index, node in enumerate(model.graph.node):
        if node.op_type == "OneHot" and node.domain in ("", "ai.onnx"):
            ids, depth = node.input[0], node.input[1]
            prefix = f"{node.name or 'one_hot'}_{index}_ids"
            nodes += [
                helper.make_node("Constant", [], [f"{prefix}_zero"], value=helper.make_tensor(
                    f"{prefix}_zero", 7, [], [0])),
                helper.make_node("CastLike", [f"{prefix}_zero", ids], [f"{prefix}_typed_zero"]),
                helper.make_node("Less", [ids, f"{prefix}_typed_zero"], [f"{prefix}_negative"]),
                helper.make_node("CastLike", [depth, ids], [f"{prefix}_depth"]),
                helper.make_node("Where", [f"{prefix}_negative", f"{prefix}_depth", ids], [f"{prefix}_in_range"]),
            ]
            node.input[0] = f"{prefix}_in_range"
        kept = NodeProto()
        kept.CopyFrom(node)
        nodes.append(kept)
    if len(nodes) != len(model.graph.node):
        del model.graph.node[:]
        model.graph.node.extend(nodes)
