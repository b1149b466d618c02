"""scikit-learn classifiers as skl2onnx exports them by default: the class probabilities go through a ZipMap, whose
output is a sequence of maps (one {class: probability} per row), which no serving protocol carries as a tensor
(V2, TF Serving and Triton all refuse it; ONNX Runtime hands it to Python as a list of dicts). Served, the ZipMap
is left out: its output keeps its name and becomes the tensor of probabilities it was made from, [batch, classes]
with the classes in the order the log line names (skl2onnx's `zipmap=False` gives the same model).
"""

from __future__ import annotations

import logging

import onnx
from onnx import TensorProto, helper

log = logging.getLogger(__name__)

ML_DOMAIN = "ai.onnx.ml"


def without_zipmap(model: onnx.ModelProto, label: str) -> bytes | None:
    """`model` (read without external data, and changed here) with its ZipMap outputs served as tensors,
    serialized; None when it has none (`label`: the file, for the log)."""
    graph = model.graph
    outputs = {output.name: output for output in graph.output}
    zipmaps = [node for node in graph.node
               if node.op_type == "ZipMap" and node.domain == ML_DOMAIN and node.output[0] in outputs]
    if not zipmaps or any(_external(tensor) for tensor in graph.initializer):
        return None
    for node in zipmaps:
        name = node.output[0]
        labels = _class_labels(node)
        index = list(graph.node).index(node)
        graph.node.remove(node)
        graph.node.insert(index, helper.make_node("Identity", [node.input[0]], [name], name=f"{node.name}_tensor"))
        served = helper.make_tensor_value_info(name, TensorProto.FLOAT, [None, len(labels) or None])
        outputs[name].CopyFrom(served)
        log.info("%s: output %r is a ZipMap (a {class: probability} map per row); served as the tensor of "
                 "probabilities it maps, [batch, %d], classes in this order: %s", label, name, len(labels),
                 labels)
    return model.SerializeToString()


def _external(tensor: onnx.TensorProto) -> bool:
    return tensor.data_location == TensorProto.EXTERNAL


def _class_labels(node: onnx.NodeProto) -> list[int | str]:
    for attribute in node.attribute:
        if attribute.name == "classlabels_int64s":
            return list(attribute.ints)
        if attribute.name == "classlabels_strings":
            return [label.decode() for label in attribute.strings]
    return []
